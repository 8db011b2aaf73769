"""Parity's report rendered, every form in one place: the Rich table and verdict line of
`onnxtax parity`, the localisation table, the markdown step summary, JUnit suites (one testcase
per provider x shape x output) and, in onnxtax.render.sarif, SARIF. `onnxtax ci` writes the same
markdown and JUnit."""

from __future__ import annotations

import math
from typing import Any

from onnxtax.core.compare import format_pct, format_value
from onnxtax.core.defaults import PARITY_NOISE_CAP as NOISE_CAP
from onnxtax.parity.localization import Localization
from onnxtax.parity.points import inputs_text
from onnxtax.parity.report import CaseResult, ParityReport, ProviderResult, fallback_reason, placement_text
from onnxtax.render.junit import JUnitCase, JUnitSuite


# --------------------------------------------------------------------------- terminal and CI log
def _ratio_style(ratio: float | None) -> str:
    """Green well inside tolerance, yellow within 10x of the limit, red outside."""
    if ratio is None:
        return ""
    if ratio > 1:
        return "bold red"
    return "yellow" if ratio > 0.1 else "green"


def _g(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.{digits}g}"


def parity_table(report: Any, out) -> None:
    """The provider x shape x output table, placement per provider, notes and failures."""
    from rich.table import Table
    from rich.markup import escape
    table = Table(title=f"parity: {escape(report.onnx)} vs {escape(report.model_spec or report.class_name)}",
                  title_justify="left", header_style="bold")
    for col, justify in (("provider", "left"), ("shape", "left"), ("output", "left"), ("rms", "right"),
                         ("atol", "right"), ("max abs", "right"),
                         ("max rel", "right"), ("outside", "right"), ("cosine", "right"),
                         ("worst: onnx vs source", "left"), ("result", "left")):
        folds = col in ("worst: onnx vs source", "shape", "output")
        table.add_column(col, justify=justify, overflow="fold", no_wrap=not folds)
    for pr in report.providers:
        ratios = [c.stats.worst.tolerance_ratio for c in pr.cases if c.stats is not None and c.stats.worst]
        worst_ratio = max(ratios) if ratios and len(pr.cases) > 1 else None
        label = escape(pr.label)
        if not pr.cases:
            table.add_row(label, "-", "-", "", "", "", "", "", "", "", _provider_cell(pr.status))
        for case in pr.cases:
            s = case.stats
            scale = ["-", "-"] if s is None or s.atol_effective is None else [_g(s.scale), _g(s.atol_effective, 2)]
            if s is not None and s.atol_effective is None and (s.source_dtype or "float")[0] in "iub":
                scale = ["-", _g(s.atol, 2)]  # integers: exact unless a tolerance names them
            if s is None or not s.samples or (s.outside == 0 and s.problems):
                nums = ["-"] * 5
            else:
                w = s.worst
                style = _ratio_style(w.tolerance_ratio if w else None)
                worst = f"[{','.join(map(str, w.index))}] {_g(w.onnx, 6)} vs {_g(w.source, 6)}" if w else "-"
                nums = [f"[{style}]{_g(s.max_abs_diff)}[/]" if style else _g(s.max_abs_diff), _g(s.max_rel_diff),
                        f"{s.outside}/{s.elements} ({s.outside_pct:.3g}%)" if s.outside else "0",
                        "-" if s.cosine_min is None else f"{s.cosine_min:.6f}", escape(worst)]
            is_worst = worst_ratio is not None and s is not None and s.worst is not None and (
                s.worst.tolerance_ratio == worst_ratio)
            table.add_row(label, escape(case.shape), escape(case.output), *scale, *nums, _case_cell(case),
                          style="bold" if is_worst else None)
            label = ""  # the provider once per group
        table.add_section()
    out.print(table)
    for pr in report.providers:
        out.print(f"[bold]{escape(pr.label)}[/]: {escape(_placement_line(pr))}", highlight=False, soft_wrap=True)
    for note in report.notes:
        out.print(f"[dim]note: {escape(note)}[/]", highlight=False, soft_wrap=True)
    failures = report.failures
    if failures:
        out.print("[bold red]failures:[/]")
        for line in failures[:15]:
            out.print(f"  - {escape(line)}", highlight=False, soft_wrap=True)
        if len(failures) > 15:
            out.print(f"  ... and {len(failures) - 15} more (--json has them all)")
        for pr in report.providers:
            if pr.status == "failed" and pr.reason and pr.reason not in failures and pr.localization is None:
                out.print(f"  [yellow]{escape(pr.label)}:[/] {escape(pr.reason)}", highlight=False, soft_wrap=True)
    for pr in report.providers:
        if pr.localization is not None:
            localization_table(pr.localization, out)


def localization_table(loc: Any, out) -> None:
    """The first divergence of one provider, the lines to read first at the top."""
    from rich.markup import escape
    from rich.table import Table

    case = loc.case
    title = f"first divergence on {loc.provider} ({case.get('shape')} sample {case.get('sample')}, {case.get('output')})"
    if loc.provider_specific:
        title += ": provider-specific"
    if not loc.found:
        out.print(f"[bold]{escape(title)}[/]: {escape(loc.summary)}", highlight=False, soft_wrap=True)
        return
    table = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    op = loc.op if loc.op is not None and loc.op.point is not None else None
    rows = [("module", f"{loc.module or '(root)'} ({loc.class_name})")]
    if op is not None:
        rows.append(("op", f"{op.op or op.kind}" + (f" ({op.function})" if op.function and op.function != op.op else "")
                     + (f"; in ONNX: {op.lowered_to}" if op.lowered_to else "")))
    rows.append(("node", f"{loc.node} ({loc.op_type})" if loc.node else None))
    if loc.source is not None:
        src = f"{loc.source.where}" + (f"  {loc.source.code}" if loc.source.code else "")
        if loc.source.user_frame:
            src += f"  (called from {loc.source.user_frame})"
        rows.append(("source", src))
    if op is not None and len(op.frames) > 1:
        rows.append(("via", " <- ".join(op.frames[1:4])))
    rows.append(("origin", f"{loc.origin}: {loc.origin_detail}" if loc.origin else loc.origin_detail))
    if loc.first is not None:
        rows.append(("diff", loc.first.problem or f"{loc.first.module}: max abs {loc.first.max_abs_diff:.3g}, "
                     f"{loc.first.outside}/{loc.first.elements} elements outside, {loc.first.tolerance_ratio:.3g}x "
                     "tolerance"))
    if op is not None:
        rows.append(("op check", op.text().split("; ")[0] if op.status != "made-here" else
                     f"{op.status}: {inputs_text(op.inputs)}; its output departs (max abs {op.point.max_abs_diff:.3g}, "
                     f"{op.point.outside}/{op.point.elements} elements outside, "
                     f"{op.point.tolerance_ratio:.3g}x tolerance)"))
        rows.append(("op inputs", ", ".join(c.text() for c in op.inputs) or None))
        rows.append(("cause", op.cause))
    elif loc.op is not None and loc.op.notes:
        rows.append(("ops", loc.op.notes[0]))
    for w in loc.weights[:2]:
        rows.append(("weight", f"initializer {w['initializer']} vs parameter {w['parameter']}: max abs "
                               f"{w['max_abs_diff']:.3g}, relative {w['max_rel_diff']:.3g}"))
    if loc.graph_only_modules or loc.eager_only_modules:
        rows.append(("branch", f"ONNX runs {', '.join(loc.graph_only_modules) or '-'}; eager ran "
                               f"{', '.join(loc.eager_only_modules) or '-'}"))
    if loc.branch_lines and op is None:
        rows.append(("branches", "if/while at line " + ", ".join(map(str, loc.branch_lines))))
    if loc.rows is not None:
        bad = loc.rows["diverging"]
        rows.append(("rows", f"{len(bad)} of {loc.rows['size']}: {', '.join(map(str, bad[:12]))}"
                     + (" ..." if len(bad) > 12 else "")))
    if loc.positions is not None:
        rows.append(("positions", f"from {loc.positions['first']} of {loc.positions['size']} (axis 1): "
                     + ", ".join(map(str, loc.positions["diverging"][:12]))))
    for shared in loc.shared:
        rows.append(("shared", shared["text"]))
    if loc.trail:
        rows.append(("grows", " -> ".join(p.text() for p in loc.trail)))
    searched = f"{loc.compared_modules} modules in {loc.chunks} chunk(s)"
    if loc.op is not None:
        searched += f", {loc.op.compared} of {loc.op.own_ops} ops of {loc.module or 'the root forward'}"
    rows.append(("searched", f"{searched}, {loc.duration_s:.2f} s"
                 + (", weights shared with the eager model" if loc.session_weights == "shared" else "")))
    for key, value in rows:
        if value:
            table.add_row(key, escape(value))
    out.print(table)


def _provider_cell(status: str) -> str:
    return {"skipped": "[dim]skipped[/]", "error": "[bold red]ERROR[/] load",
            "passed": "[green]pass[/]"}.get(status, "[bold red]FAIL[/]")


def _case_cell(case: Any) -> str:
    """A short verdict; the full reason is listed under the table."""
    if case.status == "passed":
        return "[green]pass[/]"
    if case.status == "error":
        return "[bold red]ERROR[/] run"
    stats = case.stats
    kinds = [p.split()[0] for p in stats.problems] if stats is not None else []
    if (case.reason or "").startswith("not compared: constant output"):
        kinds.insert(0, "constant")
    if stats is not None and stats.nan_inf_mismatch:
        kinds.append("NaN/Inf")
    if stats is not None and stats.outside > stats.nan_inf_mismatch:
        kinds.append("values")
    if stats is not None and stats.cosine_failed:
        kinds.append("cosine")
    return "[bold red]FAIL[/] " + ", ".join(kinds)


def _placement_line(pr: Any) -> str:
    if pr.placement is None:
        return pr.reason or pr.status
    return placement_text(pr.placement)


def rule_text(report: Any) -> str:
    """The element test in one short formula, with the noise term when it applies."""
    rule = getattr(report, "rule", None)
    if rule is None or not rule.uses_noise or not any(v for v in rule.noise.values()):
        return f"|a-b| <= {report.atol:g}*rms + {report.rtol:g}*|b|"
    ks = sorted({rule.factor(name) for name, v in rule.noise.items() if v})
    k = "k" if len(ks) > 1 else f"{ks[0]:g}"
    return f"|a-b| <= max({report.atol:g}, {k}*noise)*rms + max({report.rtol:g}, {k}*noise)*|b|"


def noise_text(report: Any) -> str | None:
    """Each output's own float32 noise and the tolerance it sets, when measured."""
    rule = getattr(report, "rule", None)
    if rule is None or not rule.uses_noise:
        return None
    if rule.noise_note:
        return f"noise: not measured ({rule.noise_note}); the fixed floors apply"
    parts = []
    for name, value in rule.noise.items():
        if value is None or name in rule.per_output:
            continue
        term = min(rule.factor(name) * value, NOISE_CAP)
        decides = (f"{rule.factor(name):g} x noise sets the tolerance" if term > report.atol
                   else f"{rule.factor(name):g} x noise is below the floor")
        parts.append(f"{name} {value:.2g} ({decides})")
    if not parts:
        return None
    where = getattr(report, "noise_shape", None)
    if where and getattr(report, "noise_samples", 0) > 1:
        where += f", largest of {report.noise_samples} samples"
    return (f"model's own rounding noise (eager vs float64{' at ' + where if where else ''}, relative to rms): "
            + "; ".join(parts))


def parity_verdict(report: Any, out) -> None:
    providers = [p for p in report.providers if p.status != "skipped"]
    n_out = len(report.outputs)
    n_samples = sum(s.samples for s in report.shapes)
    scope = (f"{len(providers)} provider(s) x {len(report.shapes)} shape(s) x {n_out} output(s), "
             f"{n_samples} sample(s), {rule_text(report)}"
             + (f", cosine >= {report.min_cosine:g}" if report.min_cosine is not None else ""))
    noise = noise_text(report)
    if noise:
        out.print(noise, highlight=False, soft_wrap=True)
    if report.passed:
        out.print(f"[bold green]parity passed[/]: {scope}", highlight=False, soft_wrap=True)
    else:
        failed = sum(1 for c in report.cases if not c.passed)
        what = f"{len(report.failures)} failure(s)" + (f", {failed} of {len(report.cases)} cases" if failed else "")
        out.print(f"[bold red]parity FAILED[/]: {what} ({scope})", highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- markdown and JUnit
def parity_markdown(report: ParityReport) -> str:
    """A GitHub step summary: verdict, one row per provider, the failures."""
    verdict = "passed" if report.passed else "FAILED"
    icon = "✅" if report.passed else "❌"
    lines = [f"### {icon} onnxtax parity {verdict}: `{report.onnx}` vs `{report.model_spec or report.class_name}`", ""]
    lines.append(f"{len(report.shapes)} shapes ({', '.join(s.label for s in report.shapes) or 'none'}), "
                 f"tolerance {rule_text(report)}"
                 + (f", cosine >= {report.min_cosine:g}" if report.min_cosine is not None else "")
                 + f", seed {report.seed}.")
    lines += ["", "| provider | status | cases passed | worst max abs diff | worst tolerance ratio | placement |",
              "|---|---|---|---|---|---|"]
    for pr in report.providers:
        passed = sum(1 for c in pr.cases if c.passed)
        worst_abs, worst_ratio = _provider_worst(pr)
        place = placement_text(pr.placement) if pr.placement else (pr.reason or "")
        lines.append(f"| {pr.label} | {pr.status} | {passed}/{len(pr.cases)} | "
                     f"{_fmt_opt(worst_abs)} | {_fmt_opt(worst_ratio)} | {place} |")
    located = [pr for pr in report.providers if pr.localization is not None]
    if located:
        lines += ["", "**First divergence**", ""]
        lines += [f"- {pr.label}: {pr.localization.summary}" for pr in located]
    if report.failures:
        lines += ["", "**Failures**", ""]
        lines += [f"- {f}" for f in report.failures[:30]]
        if len(report.failures) > 30:
            lines.append(f"- ... and {len(report.failures) - 30} more")
    return "\n".join(lines) + "\n"


def parity_junit_suites(report: ParityReport, classname: str = "onnxtax.parity") -> list:
    """One suite per provider, one testcase per shape x output; a provider that could not
    load is one error case, a skipped one one skipped case, a gated fallback one failure.
    Case classnames are CLASSNAME.PROVIDER (CLASSNAME.model for failures of no provider)."""
    suites = []
    for pr in report.providers:
        case_class = f"{classname}.{pr.request.short}"
        suite = JUnitSuite(f"parity {pr.label}", properties={"provider": pr.request.name, "onnx": report.onnx})
        if pr.status == "skipped":
            suite.cases.append(JUnitCase("provider", case_class, skipped=pr.reason or "skipped"))
        elif pr.placement is None and pr.status == "error":
            suite.cases.append(JUnitCase("session", case_class, error=pr.reason or "could not load"))
        loc = pr.localization
        for case in pr.cases:
            details = _case_details(case)
            if loc is not None and (loc.case.get("shape"), loc.case.get("output")) == (case.shape, case.output):
                details += "\n" + localization_details(loc)
            jc = JUnitCase(f"{case.shape} {case.output}", case_class, time_s=case.time_s, details=details)
            if case.status == "failed":
                jc.failure = case.explanation or "failed"
            elif case.status == "error":
                jc.error = case.explanation or "error"
            suite.cases.append(jc)
        if report.settings.get("fail_on_fallback") and pr.placement is not None:
            jc = JUnitCase("placement", case_class, details=placement_text(pr.placement))
            if pr.placement.fell_back or pr.placement.method == "unavailable":
                jc.failure = fallback_reason(pr)
            suite.cases.append(jc)
        suites.append(suite)
    if report.model_failures:
        suites.append(JUnitSuite("parity model", [JUnitCase("model", f"{classname}.model", failure=f)
                                                   for f in report.model_failures]))
    return suites


def localization_details(loc: Localization) -> str:
    """A few lines for a CI log or a JUnit failure: where, why, how it grows."""
    lines = [f"localized ({loc.provider}, {loc.case.get('shape')} sample {loc.case.get('sample')}): "
             f"{loc.summary}"]
    if loc.trail:
        lines.append("grows: " + " -> ".join(p.text() for p in loc.trail))
    if loc.op is not None and loc.op.point is not None:
        lines.append(f"op: {loc.op.text()}")
    if loc.rows is not None:
        lines.append(f"rows: {', '.join(map(str, loc.rows['diverging'][:16]))} of {loc.rows['size']}")
    lines += [f"shared: {s['text']}" for s in loc.shared]
    return "\n".join(lines)


def _fmt_opt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def _provider_worst(pr: ProviderResult) -> tuple[float | None, float | None]:
    stats = [c.stats for c in pr.cases if c.stats is not None and c.stats.samples]
    if not stats:
        return None, None
    ratios = [s.worst.tolerance_ratio for s in stats if s.worst is not None]
    return max(s.max_abs_diff for s in stats), (max(ratios) if ratios else None)


def _case_details(case: CaseResult) -> str:
    s = case.stats
    if s is None or not s.elements:
        return case.explanation or ""
    lines = [f"samples={s.samples} elements={s.elements} outside={s.outside} ({format_pct(s.outside_pct)})",
             f"max_abs_diff={s.max_abs_diff:.6g} max_rel_diff={s.max_rel_diff:.6g} "
             f"cosine_min={'-' if s.cosine_min is None else f'{s.cosine_min:.9f}'}",
             f"rtol={s.rtol:g} atol={s.atol:g} detects {s.detectable} onnx_shape={s.onnx_shape} "
             f"source_shape={s.source_shape}"]
    if s.worst:
        w = s.worst
        lines.append(f"worst index={list(w.index)} sample={w.sample} onnx={format_value(w.onnx)} source={format_value(w.source)} "
                     f"tolerance_ratio={w.tolerance_ratio:.3g}")
    if case.explanation:
        lines.insert(0, case.explanation)
    return "\n".join(lines)
