"""The run-level files `onnxtax ci` writes into its reports folder: junit.xml (a testcase per
stage, parity's and the runtime matrix's cases inside), lint.sarif (every model's findings and
localised divergences in one run), summary.md (also appended to $GITHUB_STEP_SUMMARY), host.json,
ci.json. Each stage's part is rendered by onnxtax.render, as the commands render it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onnxtax.ci.report import (REPORTS_FLAG, STAGE_TITLES, STAGES, VERDICT_TEXT, CiReport, ModelRun, ProviderVerdict,
                               StageResult)
from onnxtax.render.junit import JUnitCase, JUnitSuite, write_junit
from onnxtax.render.parity import parity_junit_suites
from onnxtax.render.runtimes import cell_text, runtimes_junit_suites
from onnxtax.render.sarif import lint_sarif, merge_sarif, parity_sarif
from onnxtax.render.text import md_cell


def ci_junit_suites(report: CiReport) -> list:
    suites = []
    for run in report.models:
        suite = JUnitSuite(run.name, properties={
            "spec": run.config.spec, "onnx": str(run.config.output), "status": run.status,
            "artifact_sha256": run.artifact_sha256 or "", "host": report.host.get("label", "")})
        for stage in run.stages.values():
            suite.cases.extend(_stage_cases(run.name, stage))
        suites.append(suite)
    return suites


def ci_sarif(report: CiReport) -> dict:
    """Every model's lint findings as one SARIF 2.1.0 log with a single run (code
    scanning rejects several runs of one tool in one upload)."""
    logs = [lint_sarif(s.result) for run in report.models for s in [run.stages.get("lint")]
            if s is not None and s.result is not None and hasattr(s.result, "findings")]
    # a localised parity failure is a result at the source line where the model diverges
    logs += [parity_sarif(s.result) for run in report.models for s in [run.stages.get("parity")]
             if s is not None and s.result is not None and any(
                 pr.localization is not None and pr.localization.found for pr in s.result.providers)]
    return merge_sarif(logs)


def _stage_cases(model: str, stage: StageResult) -> list:
    classname = f"onnxtax.{model}.{stage.name}"
    title = STAGE_TITLES[stage.name]
    if stage.status == "off":
        return []
    if stage.status == "not_run":
        return [JUnitCase(title, classname, skipped=stage.summary or "not run")]
    if stage.status == "error":
        return [JUnitCase(title, classname, time_s=stage.seconds, error=stage.error or "error",
                          details="\n".join(x for x in (stage.error, stage.hint and f"fix: {stage.hint}",
                                                        stage.traceback) if x))]
    if stage.name == "parity" and stage.result is not None and hasattr(stage.result, "shapes"):
        cases = []
        for suite in parity_junit_suites(stage.result, classname=classname):
            for case in suite.cases:
                case.name = f"{suite.name} {case.name}"
                cases.append(case)
        return cases
    if stage.name == "runtimes" and stage.result is not None and hasattr(stage.result, "results"):
        cases = []
        for suite in runtimes_junit_suites(stage.result, classname=classname):  # one suite per release x provider
            for case in suite.cases:
                case.name = f"{suite.name} {case.name}"
                cases.append(case)
        return cases
    if stage.name == "bench" and stage.result is not None and getattr(stage.result, "gates", None):
        cases = [JUnitCase(title, classname, time_s=stage.seconds, details=stage.summary)]
        for gate in stage.result.gates:
            name = f"{gate.gate} {gate.key} {gate.path} batch={gate.batch_size}"
            cases.append(JUnitCase(name, f"{classname}.gates", details=gate.message,
                                   failure=None if gate.passed else gate.message))
        return cases
    if stage.name == "serve" and stage.result is not None and getattr(stage.result, "gates", None) is not None:
        failure = None
        if stage.status == "failed" and stage.result.failures:
            failure = "; ".join(stage.result.failures)
        cases = [JUnitCase(title, classname, time_s=stage.seconds, details=stage.summary, failure=failure)]
        for gate in stage.result.gates:
            load = f" at {gate.load:g} rows/s" if gate.load is not None else ""
            cases.append(JUnitCase(f"{gate.gate} {gate.path}{load}", f"{classname}.gates", details=gate.message,
                                   failure=None if gate.passed else gate.message))
        return cases
    details = stage.summary
    if stage.name == "export" and stage.result is not None and hasattr(stage.result, "checks"):
        details = "\n".join([stage.summary] + [f"{'pass' if c.passed else 'FAIL'} {c.name}: {c.detail}"
                                              for c in stage.result.checks] + [f"warning: {w}" for w in
                                                                                 stage.result.warnings])
    if stage.name == "lint" and stage.result is not None:
        details = "\n".join([stage.summary] + [_finding_line(f) for f in stage.result.findings])
    failure = None
    if stage.status == "failed":
        failure = stage.error or stage.summary or "failed"
        if stage.hint:
            details += f"\nfix: {stage.hint}"
    return [JUnitCase(title, classname, time_s=stage.seconds, failure=failure, details=details)]


def _finding_line(f: Any) -> str:
    where = f" {f.where}" if f.where else ""
    at = f" at {f.source_location}" if f.source_location else ""
    allowed = " (allowed)" if f.allowed else ""
    return f"{f.severity} {f.rule}{where}{at}{allowed}: {f.message}"

ICONS = {"passed": "✅", "failed": "❌", "error": "⛔", "not_run": "⏭️", "off": "–"}


def summary_markdown(report: CiReport) -> str:
    n = len(report.models)
    failed = [m for m in report.models if not m.passed]
    if report.interrupted:
        head = (f"## ⛔ onnxtax ci interrupted: {sum(1 for m in report.models if m.status != 'not_run')} of {n} "
                f"model{'s' if n != 1 else ''} finished")
    elif report.passed:
        head = f"## ✅ onnxtax ci passed: {n} model{'s' if n != 1 else ''}"
    else:
        head = f"## ❌ onnxtax ci failed: {len(failed)} of {n} model{'s' if n != 1 else ''}"
    host = report.host
    versions = host.get("versions") or {}
    lines = [head, "",
             f"Host **{host.get('label', '')}**: {host.get('cpu', '')}"
             + (f", GPU {', '.join(host['gpus'])}" if host.get("gpus") else "")
             + f"; {versions.get('onnxruntime_package', 'onnxruntime')} {versions.get('onnxruntime', '')}, "
               f"torch {versions.get('torch', '')}; providers: {', '.join(host.get('compute_providers') or [])}.",
             "", "| model | " + " | ".join(STAGE_TITLES[s] for s in STAGES) + " | peak memory | time |",
             "|---|" + "---|" * len(STAGES) + "---|---|"]
    for run in report.models:
        cells = []
        for s in STAGES:
            stage = run.stages.get(s)
            if stage is None or stage.status == "off":
                cells.append("–")
            elif stage.status == "not_run":
                cells.append("⏭️ not run")
            else:
                cells.append(f"{ICONS[stage.status]} {md_cell(stage.summary)}"[:160])
        lines.append(f"| **{run.name}** | " + " | ".join(cells) + f" | {peak_cell(run)} | {run.seconds:.1f} s |")
    providers = [p for run in report.models for p in run.providers]
    if providers:
        labels = list(dict.fromkeys(p.label for p in providers))
        lines += ["", "| model | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for run in report.models:
            got = {p.label: p for p in run.providers}
            lines.append(f"| {run.name} | " + " | ".join(_verdict_cell(got.get(label)) for label in labels) + " |")
    lines += _runtimes_markdown(report)
    if failed:
        lines += ["", "### Failures", ""]
        for run in failed:
            stage = run.first_problem
            if stage is None:
                why = next((s.summary for s in run.stages.values() if s.status == "not_run" and s.summary), "not run")
                lines.append(f"- **{run.name}**: {md_cell(why)}")
                continue
            lines.append(f"- **{run.name}** {STAGE_TITLES[stage.name]} {stage.status}: {md_cell(stage.error or '')}")
            if stage.hint:
                lines.append(f"  - fix: {md_cell(stage.hint)}")
    return "\n".join(lines) + "\n"


def peak_cell(run: ModelRun) -> str:
    """`2.95 GB parity`: the model's highest stage peak and where, for the summaries."""
    from onnxtax.core.memory import format_bytes

    stage = run.peak_stage
    return f"{format_bytes(stage.memory.peak_rss_bytes)} {STAGE_TITLES[stage.name]}" if stage is not None else "-"


def _runtimes_markdown(report: CiReport) -> list[str]:
    """model x onnxruntime release x provider, for the models with a runtimes stage."""
    rows = [(run.name, r) for run in report.models for st in [run.stages.get("runtimes")]
            if st is not None and st.result is not None and hasattr(st.result, "results") for r in st.result.results]
    if not rows:
        return []
    labels = list(dict.fromkeys(r.label for _, r in rows))
    lines = ["", "| model | onnxruntime | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for key in dict.fromkeys((name, r.ort) for name, r in rows):
        got = {r.label: r for name, r in rows if (name, r.ort) == key}
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cell_text(got[lb]) if lb in got else ""
                                                              for lb in labels) + " |")
    return lines


def _verdict_cell(v: ProviderVerdict | None) -> str:
    return "" if v is None else VERDICT_TEXT.get(v.verdict, v.verdict)


def write_reports(report: CiReport, out_dir: str | Path) -> list[Path]:
    """junit.xml, lint.sarif, summary.md, host.json, ci.json (model JSONs are written as
    each model finishes). Appends the summary to $GITHUB_STEP_SUMMARY when set."""
    from onnxtax.core.files import write_output
    from onnxtax.core.report import append_github_summary, jsonable

    out_dir = Path(out_dir)
    files = [out_dir / f"{m.name}.json" for m in report.models]
    write_junit(out_dir / "junit.xml", ci_junit_suites(report), name="onnxtax ci", what=REPORTS_FLAG)
    write_output(out_dir / "lint.sarif", ci_sarif(report), REPORTS_FLAG)
    markdown = summary_markdown(report)
    write_output(out_dir / "summary.md", markdown, REPORTS_FLAG)
    write_output(out_dir / "host.json", report.host, REPORTS_FLAG)
    files += [out_dir / name for name in ("junit.xml", "lint.sarif", "summary.md", "host.json", "ci.json")]
    report.files = [str(p) for p in files]
    write_output(out_dir / "ci.json", jsonable(report.to_dict()), REPORTS_FLAG)
    append_github_summary(markdown)
    return files
