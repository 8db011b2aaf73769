"""The runtime matrix rendered: the table and verdict of `onnxtax runtimes`, its markdown and JUnit suites."""

from __future__ import annotations

from typing import Any

from onnxtax.render.junit import JUnitCase, JUnitSuite
from onnxtax.runtimes.matrix import RuntimeResult


def runtimes_table(report, out) -> None:
    """Release x provider: status, the runtime's message, worst difference; then failures."""
    from rich.markup import escape
    from rich.table import Table

    ref = report.reference.get("spec") or f"onnxruntime {report.reference.get('onnxruntime')} (installed)"
    info = report.model_info
    opsets = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in info.get("opsets", {}).items())
    table = Table(title=f"runtimes: {escape(report.onnx)} (IR {info.get('ir_version')}, {escape(opsets)}) vs "
                        f"{escape(ref)}", title_justify="left", header_style="bold")
    for col, justify in (("onnxruntime", "left"), ("provider", "left"), ("loads", "left"), ("parity", "left"),
                         ("cases", "right"), ("max abs", "right"), ("detail", "left")):
        table.add_column(col, justify=justify, overflow="fold", no_wrap=col not in ("detail",))
    for r in report.results:
        loads = {"load-error": "[bold red]no[/]", "unavailable": "[dim]-[/]", "crashed": "[bold red]crashed[/]"}.get(
            r.status, "[green]yes[/]")
        parity = {"passed": "[green]pass[/]", "failed": "[bold red]FAIL[/]", "run-error": "[bold red]ERROR[/] run",
                  "unavailable": "[dim]not in package[/]"}.get(r.status, "[dim]-[/]")
        passed = sum(1 for c in r.cases if c.passed)
        diffs = [c.stats.max_abs_diff for c in r.cases if c.stats is not None and c.stats.samples]
        detail = r.message or ""
        if r.status == "failed":
            bad = next(c for c in r.cases if not c.passed)
            detail = f"{bad.shape} {bad.output}: {bad.reason}"
        table.add_row(r.ort, escape(r.label), loads, parity, f"{passed}/{len(r.cases)}" if r.cases else "-",
                      f"{max(diffs):.3g}" if diffs else "-", escape(detail))
    out.print(table)
    for note in report.notes:
        out.print(f"[dim]note: {escape(note)}[/]", highlight=False, soft_wrap=True)
    for env in report.environments:
        if env.get("built_now"):
            out.print(f"[dim]built the onnxruntime {env['version']} virtualenv in {env['build_s']:.0f} s "
                      f"({escape(env['path'])})[/]", highlight=False, soft_wrap=True)
    for r in report.results:
        if r.status in ("passed", "unavailable") or not r.predicted:
            continue
        out.print(f"[yellow]{r.ort}:[/] the limits table predicted it: {escape('; '.join(r.predicted))}",
                  highlight=False, soft_wrap=True)


def runtimes_verdict(report, out) -> None:
    lowest = report.minimum_passing
    scope = (f"{len(report.versions)} release(s) x {len({r.label for r in report.results})} provider(s), "
             f"{len(report.shapes)} shape(s); lowest passing release: {lowest or 'none'}")
    if report.passes_from and report.passes_from != lowest:
        scope += f" (every listed release from {report.passes_from} passes)"
    if report.passed:
        out.print(f"[bold green]runtimes passed[/]: {scope}", highlight=False, soft_wrap=True)
    else:
        out.print(f"[bold red]runtimes FAILED[/]: {len(report.failures)} failure(s); {scope}", highlight=False,
                  soft_wrap=True)


def cell_text(r: RuntimeResult) -> str:
    """A matrix cell: pass, FAIL values, FAIL load, not in package."""
    return {"passed": "pass", "failed": "FAIL values", "load-error": "FAIL load", "run-error": "FAIL run",
            "crashed": "FAIL crashed", "unavailable": "not in package"}[r.status]


def runtimes_markdown(report: Any) -> str:
    """The release x provider matrix for a CI step summary."""
    icon = "✅" if report.passed else "❌"
    ref = report.reference.get("spec") or f"onnxruntime {report.reference.get('onnxruntime')}"
    lines = [f"### {icon} onnxtax runtimes: `{report.onnx}` vs `{ref}`", ""]
    providers = list(dict.fromkeys(r.label for r in report.results))
    lines.append("| onnxruntime | " + " | ".join(providers) + " |")
    lines.append("|---|" + "---|" * len(providers))
    for v in report.versions:
        cells = []
        for p in providers:
            r = next((x for x in report.results if x.ort == v and x.label == p), None)
            cells.append("-" if r is None else cell_text(r))
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    lines += ["", f"minimum passing: {report.minimum_passing or 'none'}"]
    if report.failures:
        lines += ["", "**Failures**", ""] + [f"- {f}" for f in report.failures[:30]]
    return "\n".join(lines) + "\n"


def runtimes_junit_suites(report: Any, classname: str = "onnxtax.runtimes") -> list:
    """One suite per release x provider: a `load` testcase, then one per shape x output.
    Case classnames are CLASSNAME.ort-VERSION.PROVIDER."""
    suites = []
    for r in report.results:
        case_class = f"{classname}.ort-{r.ort}.{r.short}"
        suite = JUnitSuite(f"runtimes ort-{r.ort} {r.label}", properties={
            "onnxruntime": r.ort, "provider": r.provider, "onnx": report.onnx})
        if r.status == "unavailable":
            suite.cases.append(JUnitCase("load", case_class, skipped=r.message or "not in this package"))
        elif r.status in ("load-error", "crashed"):
            suite.cases.append(JUnitCase("load", case_class, failure=r.message or r.status,
                                         details=r.detail or r.message or ""))
        else:
            suite.cases.append(JUnitCase("load", case_class, time_s=r.load_s or 0.0))
        for c in r.cases:
            jc = JUnitCase(f"{c.shape} {c.output}", case_class, time_s=c.time_s)
            if c.status == "failed":
                jc.failure = c.reason or "failed"
            elif c.status == "error":
                jc.error = c.reason or "error"
            suite.cases.append(jc)
        suites.append(suite)
    return suites
