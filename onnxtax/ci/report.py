"""The results of one `onnxtax ci` run (per stage, per provider, per model, the whole run) and
the files they are written as.

Reports (write_reports), in one folder:
  <model>.json   every stage's result, the manifest, the provider verdicts, the host
  junit.xml      a testsuite per model: a testcase per stage, per provider x shape x
                 output (parity) and per benchmark gate
  lint.sarif     every model's lint findings (and localised parity divergences) as one SARIF 2.1.0 run
  summary.md     the model x stage table (also appended to $GITHUB_STEP_SUMMARY)
  host.json      the host facts, so runs from several machines can be merged
  ci.json        the whole run (what `onnxtax ci --json` prints)
  running.json   only while a stage runs: {"schema": "onnxtax.ci.running/1", "model", "stage",
                 "started_utc", "pid", "rss_bytes", "available_bytes", "available_source"};
                 left behind by a run that was killed (SIGKILL, e.g. the OOM killer)

Model report schema ("onnxtax.ci.model/1", keys stable):
{
  "schema": "onnxtax.ci.model/1",
  "model": "fraud", "status": "passed" | "failed" | "error" | "not_run", "passed": true,
  "spec": "/abs/fraud_detector.py:FraudDetector", "onnx": "/abs/build/onnx/fraud.onnx",
  "artifact_sha256": "..." | null,
  "stages": {"export" | "lint" | "parity" | "runtimes" | "verify" | "bench" | "quantize":
             {"status": "passed" | "failed" | "error" | "not_run" | "off", "seconds": 1.2,
              "summary": "one line", "error": null | "...", "hint": null | "...",
              "memory": null | {the stage report's "memory": weights_bytes, peak_rss_bytes, ...},
              "result": null | {the stage's own report: ExportResult / LintReport / ParityReport /
                                RuntimeMatrixReport / VerifyReport / BenchReport .to_dict()}}},
  "providers": [{"provider": "CPUExecutionProvider", "label": "cpu",
                 "verdict": "passed" | "fell_back" | "failed" | "error" | "not_available" | "not_run",
                 "reason": null | "...", "placement": null | {"total_nodes": 3, "on_provider": 3, "fallback": 0,
                                                              "fallback_op_types": {}}}],
  "manifest": null | {the manifest beside the artifact},
  "config": {the model's resolved config},
  "host": {report.host_facts() + "label"},
  "run": {"started_utc": "...", "seconds": 7.1, "config": "/abs/onnxtax.toml"}
}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from onnxtax.ci.config import ModelConfig
from onnxtax.core.errors import EXIT_CHECK_FAILED, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, EXIT_USAGE
from onnxtax.core.report import md_cell

MODEL_SCHEMA = "onnxtax.ci.model/1"
RUN_SCHEMA = "onnxtax.ci/1"
STAGES = ("export", "lint", "parity", "runtimes", "verify", "bench", "quantize")
# error: a usage problem stopped the stage (exit 2); failed: its check failed (exit 1); off: not configured
StageStatus = Literal["passed", "failed", "error", "not_run", "off"]
ProviderVerdictName = Literal["passed", "fell_back", "failed", "error", "not_available", "not_run"]
STAGE_TITLES = {"export": "export", "lint": "lint-ops", "parity": "parity", "runtimes": "runtimes",
                "verify": "manifest verify", "bench": "bench", "quantize": "quantize"}
# Verdicts of one provider on one model, from best to worst; "passed" and "fell_back" are passes.
VERDICTS = get_args(ProviderVerdictName)
PASSING = ("passed", "fell_back")
REPORT_FILES = ("junit.xml", "lint.sarif", "summary.md", "host.json", "ci.json")
# written before each stage and removed when the run ends: left behind, it names the stage a
# SIGKILL (the OOM killer, exit 137) stopped, which no other report can
RUNNING_FILE, RUNNING_SCHEMA = "running.json", "onnxtax.ci.running/1"
REPORTS_FLAG = "--reports"


@dataclass
class StageResult:
    """One stage of one model. `status` "off": not configured; "not_run": an earlier stage failed."""

    name: str
    status: StageStatus = "not_run"
    seconds: float = 0.0
    summary: str = ""
    error: str | None = None
    hint: str | None = None
    result: Any = None  # the stage's own report object
    traceback: str | None = None  # with debug=True, for "error"

    @property
    def passed(self) -> bool | None:
        return {"passed": True, "failed": False, "error": False}.get(self.status)

    @property
    def memory(self) -> Any:
        """The stage report's onnxtax.core.memory.MemoryRecord, when it ran far enough to have one."""
        return getattr(self.result, "memory", None)

    def to_dict(self) -> dict:
        from onnxtax.core.report import jsonable

        result = self.result.to_dict() if hasattr(self.result, "to_dict") else self.result
        return {"status": self.status, "seconds": round(self.seconds, 3), "summary": self.summary,
                "error": self.error, "hint": self.hint,
                "memory": self.memory.to_dict() if self.memory is not None else None, "result": jsonable(result)}


@dataclass
class ProviderVerdict:
    """What one model got on one provider on this host; the cells of the merged matrix."""

    provider: str
    label: str
    verdict: ProviderVerdictName
    reason: str | None = None
    placement: dict | None = None

    def to_dict(self) -> dict:
        return {"provider": self.provider, "label": self.label, "verdict": self.verdict, "reason": self.reason,
                "placement": self.placement}


@dataclass
class ModelRun:
    name: str
    config: ModelConfig
    stages: dict[str, StageResult] = field(default_factory=dict)
    providers: list[ProviderVerdict] = field(default_factory=list)
    manifest: dict | None = None
    started_utc: str = ""
    seconds: float = 0.0

    @property
    def status(self) -> str:
        states = [s.status for s in self.stages.values()]
        if "error" in states:
            return "error"
        if "failed" in states:
            return "failed"
        if all(s in ("not_run", "off") for s in states):
            return "not_run"
        return "passed"

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def __bool__(self) -> bool:
        return self.passed

    @property
    def artifact_sha256(self) -> str | None:
        return (self.manifest or {}).get("artifact", {}).get("sha256")

    @property
    def peak_stage(self) -> StageResult | None:
        """The stage with the highest peak RSS: what sizes the runner for this model."""
        measured = [s for s in self.stages.values() if s.memory is not None and s.memory.peak_rss_bytes is not None]
        return max(measured, key=lambda s: s.memory.peak_rss_bytes, default=None)

    @property
    def first_problem(self) -> StageResult | None:
        return next((s for s in self.stages.values() if s.status in ("failed", "error")), None)

    def to_dict(self, host: dict | None = None, config_path: str | None = None) -> dict:
        return {
            "schema": MODEL_SCHEMA, "model": self.name, "status": self.status, "passed": self.passed,
            "spec": self.config.spec, "onnx": str(self.config.output), "artifact_sha256": self.artifact_sha256,
            "stages": {name: s.to_dict() for name, s in self.stages.items()},
            "providers": [p.to_dict() for p in self.providers],
            "manifest": self.manifest, "config": self.config.to_dict(), "host": host or {},
            "run": {"started_utc": self.started_utc, "seconds": round(self.seconds, 3), "config": config_path},
        }


@dataclass
class CiReport:
    """One `onnxtax ci` run. Truthy when every selected model passed every stage."""

    config_path: str
    models: list[ModelRun]
    host: dict
    reports_dir: str | None = None
    started_utc: str = ""
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)
    interrupted: bool = False  # stopped by SIGINT (Ctrl-C) or SIGTERM; unfinished models are "not_run"
    signal: str | None = None  # "SIGINT" | "SIGTERM" when interrupted

    @property
    def passed(self) -> bool:
        return bool(self.models) and not self.interrupted and all(m.passed for m in self.models)

    def __bool__(self) -> bool:
        return self.passed

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_SIGTERM if self.signal == "SIGTERM" else EXIT_SIGINT  # as a shell reports them
        if any(m.status == "error" for m in self.models):
            return EXIT_USAGE
        return EXIT_OK if self.passed else EXIT_CHECK_FAILED

    def to_dict(self) -> dict:
        return {
            "schema": RUN_SCHEMA, "passed": self.passed, "exit_code": self.exit_code, "config": self.config_path,
            "reports_dir": self.reports_dir, "interrupted": self.interrupted, "signal": self.signal,
            "started_utc": self.started_utc,
            "seconds": round(self.seconds, 3),
            "counts": {status: sum(1 for m in self.models if m.status == status)
                       for status in ("passed", "failed", "error", "not_run")},
            "models": [m.to_dict(self.host, self.config_path) for m in self.models], "host": self.host,
            "files": self.files,
        }

    # ----------------------------------------------------------------- CI file formats

    def junit_suites(self) -> list:
        from onnxtax.core.report import JUnitSuite

        suites = []
        for run in self.models:
            suite = JUnitSuite(run.name, properties={
                "spec": run.config.spec, "onnx": str(run.config.output), "status": run.status,
                "artifact_sha256": run.artifact_sha256 or "", "host": self.host.get("label", "")})
            for stage in run.stages.values():
                suite.cases.extend(_stage_cases(run.name, stage))
            suites.append(suite)
        return suites

    def sarif(self) -> dict:
        """Every model's lint findings as one SARIF 2.1.0 log with a single run (code
        scanning rejects several runs of one tool in one upload)."""
        from onnxtax.lint.sarif import merge_sarif
        from onnxtax.parity.sarif import parity_sarif

        logs = [s.result.to_sarif() for run in self.models for s in [run.stages.get("lint")]
                if s is not None and s.result is not None and hasattr(s.result, "to_sarif")]
        # a localised parity failure is a result at the source line where the model diverges
        logs += [parity_sarif(s.result) for run in self.models for s in [run.stages.get("parity")]
                 if s is not None and s.result is not None and any(
                     pr.localization is not None and pr.localization.found for pr in s.result.providers)]
        return merge_sarif(logs)

    def markdown(self) -> str:
        return summary_markdown(self)


# --------------------------------------------------------------------------- JUnit

def _stage_cases(model: str, stage: StageResult) -> list:
    from onnxtax.core.report import JUnitCase

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
    if stage.name == "parity" and stage.result is not None and hasattr(stage.result, "junit_suites"):
        cases = []
        for suite in stage.result.junit_suites(classname=classname):
            for case in suite.cases:
                case.name = f"{suite.name} {case.name}"
                cases.append(case)
        return cases
    if stage.name == "runtimes" and stage.result is not None and hasattr(stage.result, "junit_suites"):
        cases = []
        for suite in stage.result.junit_suites(classname=classname):  # one suite per release x provider
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


# --------------------------------------------------------------------------- markdown

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
    from onnxtax.runtimes.matrix import cell_text

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


VERDICT_TEXT = {"passed": "✅ passed", "fell_back": "⚠️ fell back", "failed": "❌ failed", "error": "⛔ error",
                "not_available": "➖ not available", "not_run": "⏭️ not run"}


def _verdict_cell(v: ProviderVerdict | None) -> str:
    return "" if v is None else VERDICT_TEXT.get(v.verdict, v.verdict)



# --------------------------------------------------------------------------- files

def write_reports(report: CiReport, out_dir: str | Path) -> list[Path]:
    """junit.xml, lint.sarif, summary.md, host.json, ci.json (model JSONs are written as
    each model finishes). Appends the summary to $GITHUB_STEP_SUMMARY when set."""
    from onnxtax.core.files import write_output
    from onnxtax.core.report import append_github_summary, jsonable, write_junit

    out_dir = Path(out_dir)
    files = [out_dir / f"{m.name}.json" for m in report.models]
    write_junit(out_dir / "junit.xml", report.junit_suites(), name="onnxtax ci", what=REPORTS_FLAG)
    write_output(out_dir / "lint.sarif", report.sarif(), REPORTS_FLAG)
    markdown = report.markdown()
    write_output(out_dir / "summary.md", markdown, REPORTS_FLAG)
    write_output(out_dir / "host.json", report.host, REPORTS_FLAG)
    files += [out_dir / name for name in ("junit.xml", "lint.sarif", "summary.md", "host.json", "ci.json")]
    report.files = [str(p) for p in files]
    write_output(out_dir / "ci.json", jsonable(report.to_dict()), REPORTS_FLAG)
    append_github_summary(markdown)
    return files
