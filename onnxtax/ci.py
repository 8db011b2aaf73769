"""`onnxtax ci`: the whole chain for every configured model, as one CI step.

Per model, in order: export (with all export checks) -> lint-ops -> parity on every
configured provider -> runtimes (the onnxruntime releases of `[runtimes] ort`) -> manifest verify ->
bench -> quantize (runtimes, bench and quantize only when configured). A stage that
fails marks the later stages of that model "not_run"; the next model still runs unless
`keep_going=False`. Usage errors inside a stage (a model that does not build, a
provider this host lacks without `skip_unavailable`) are recorded as status "error",
not raised, so one broken model never hides the others' results; the exit code is
then 2. Configuration problems are found before anything runs (config.load_config
and the provider pre-flight) and raise.

Reports (write_reports), in one folder:
  <model>.json   every stage's result, the manifest, the provider verdicts, the host
  junit.xml      a testsuite per model: a testcase per stage, per provider x shape x
                 output (parity) and per benchmark gate
  lint.sarif     every model's lint findings (and localised parity divergences) as one SARIF 2.1.0 run
  summary.md     the model x stage table (also appended to $GITHUB_STEP_SUMMARY)
  host.json      the host facts, so runs from several machines can be merged
  ci.json        the whole run (what `onnxtax ci --json` prints)

Model report schema ("onnxtax.ci.model/1", keys stable):
{
  "schema": "onnxtax.ci.model/1",
  "model": "fraud", "status": "passed" | "failed" | "error" | "not_run", "passed": true,
  "spec": "/abs/fraud_detector.py:FraudDetector", "onnx": "/abs/build/onnx/fraud.onnx",
  "artifact_sha256": "..." | null,
  "stages": {"export" | "lint" | "parity" | "runtimes" | "verify" | "bench" | "quantize":
             {"status": "passed" | "failed" | "error" | "not_run" | "off", "seconds": 1.2,
              "summary": "one line", "error": null | "...", "hint": null | "...",
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

import json
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal, get_args

from onnxtax.config import ModelConfig, OnnxtaxConfig
from onnxtax.errors import (EXIT_CHECK_FAILED, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, EXIT_USAGE, CheckFailed,
                             OnnxtaxError)
from onnxtax.report import md_cell

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
REPORTS_FLAG = "--reports"

StageFn = Callable[[str, str, "StageResult | None"], None]  # (model, stage, result or None at start)
MessageFn = Callable[[str, str, str], None]  # (model, stage, message)


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

    def to_dict(self) -> dict:
        from onnxtax.report import jsonable

        result = self.result.to_dict() if hasattr(self.result, "to_dict") else self.result
        return {"status": self.status, "seconds": round(self.seconds, 3), "summary": self.summary,
                "error": self.error, "hint": self.hint, "result": jsonable(result)}


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
        from onnxtax.report import JUnitSuite

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
        from onnxtax.localize import parity_sarif

        logs = [s.result.to_sarif() for run in self.models for s in [run.stages.get("lint")]
                if s is not None and s.result is not None and hasattr(s.result, "to_sarif")]
        # a localised parity failure is a result at the source line where the model diverges
        logs += [parity_sarif(s.result) for run in self.models for s in [run.stages.get("parity")]
                 if s is not None and s.result is not None and any(
                     pr.localization is not None and pr.localization.found for pr in s.result.providers)]
        return merge_sarif(logs)

    def markdown(self) -> str:
        return summary_markdown(self)


# --------------------------------------------------------------------------- running

def _now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_ci(config: OnnxtaxConfig, *, only: list[str] | tuple[str, ...] | None = None,
           reports_dir: str | Path | None = None, write: bool = True, keep_going: bool | None = None,
           providers: list[str] | tuple[str, ...] | None = None, skip_unavailable: bool | None = None,
           bench: bool = True, host_label: str | None = None, reuse_artifacts: bool = False, debug: bool = False,
           on_stage: StageFn | None = None, on_message: MessageFn | None = None) -> CiReport:
    """Run every selected model through the chain and write the reports.

    Args:
        only: model names to run (default: all, in file order).
        reports_dir: where reports go (default: the config's `reports`); write=False writes none.
        keep_going: continue after a failing model (default: not the config's `fail_fast`).
        providers: replace every model's parity (and bench) providers; they must then be on this
            host unless skip_unavailable=True.
        skip_unavailable: override the config's `skip_unavailable`.
        bench: False skips the configured benchmarks.
        host_label: the name this host gets in merged matrices (default: hostname + ORT package).
        reuse_artifacts: test the artifact already at a model's output (with its manifest) instead
            of exporting again, e.g. one downloaded from the job that exported it, so that every
            host checks the same bytes; models without one are exported.
        on_stage: called as (model, stage, None) when a stage starts and (model, stage, result) when done.
        on_message: progress inside a stage, as (model, stage, message).

    Raises OnnxtaxError for an unknown --only name or provider, before any model runs.
    """
    from onnxtax.report import host_facts

    started = time.perf_counter()
    selected = config.select(only)
    keep_going = (not config.fail_fast) if keep_going is None else keep_going
    models = [_with_overrides(m, providers, skip_unavailable, bench) for m in selected]
    for m in models:
        _preflight_providers(m)
    host = host_facts()
    host["label"] = host_label or default_host_label(host)
    report = CiReport(str(config.path), [], host, started_utc=_now_utc())
    out_dir = Path(reports_dir).resolve() if reports_dir is not None else config.reports
    if write:
        from onnxtax.files import check_output
        from onnxtax.report import check_github_summary

        check_output(out_dir, "--reports", folder=True)
        check_github_summary()
        report.reports_dir = str(out_dir)
        _clear_stale_reports(out_dir)
    stop = False
    try:
        for model in models:
            if stop:
                run = _not_run(model, "not run: an earlier model failed (--fail-fast)")
            else:
                run = _run_model(model, debug=debug, reuse=reuse_artifacts, on_stage=on_stage,
                                 on_message=on_message)
            report.models.append(run)
            if write:
                from onnxtax.files import write_output

                write_output(out_dir / f"{run.name}.json", run.to_dict(host, str(config.path)), REPORTS_FLAG)
            if not run.passed and not keep_going:
                stop = True
    except KeyboardInterrupt as exc:
        # Ctrl-C, a CI job cancelled (GitHub Actions sends SIGINT), or SIGTERM (timeout, docker,
        # Kubernetes; see errors.Terminated): the run-level reports still describe this run,
        # with the models that did not finish as not run.
        report.interrupted = True
        report.signal = getattr(exc, "signal_name", "SIGINT")
        done = {run.name for run in report.models}
        report.models += [_not_run(m, "not run: the run was interrupted") for m in models if m.name not in done]
        report.seconds = time.perf_counter() - started
        if write:
            report.files = [str(p) for p in write_reports(report, out_dir)]
        raise
    report.seconds = time.perf_counter() - started
    if write:
        report.files = [str(p) for p in write_reports(report, out_dir)]
    return report


def _not_run(model: ModelConfig, why: str) -> ModelRun:
    run = ModelRun(model.name, model, started_utc=_now_utc())
    for name in STAGES:
        run.stages[name] = StageResult(name, "off" if _stage_off(model, name) else "not_run", summary=why)
    run.providers = _provider_verdicts(model, None)
    return run


def default_host_label(host: dict) -> str:
    package = (host.get("versions") or {}).get("onnxruntime_package") or "onnxruntime"
    return f"{host.get('hostname') or 'host'} ({package})"


def _with_overrides(model: ModelConfig, providers, skip_unavailable, bench: bool) -> ModelConfig:
    import copy

    model = copy.deepcopy(model)
    if providers:
        # providers named for this host must be there, unless skipping is asked for again
        model.parity.providers = list(providers)
        model.parity.skip_unavailable = bool(skip_unavailable)
        if model.bench is not None:
            model.bench.providers = None  # follows the parity providers
    elif skip_unavailable is not None:
        model.parity.skip_unavailable = skip_unavailable
    if not bench:
        model.bench = None
    return model


def _preflight_providers(model: ModelConfig) -> None:
    """Unknown provider names, and ones this host lacks (unless skipped), are usage
    errors: found before minutes of exports, not after."""
    from onnxtax.providers import resolve_providers

    resolve_providers(model.parity.providers or None, skip_unavailable=model.parity.skip_unavailable)
    if model.bench is not None and model.bench.providers:
        resolve_providers(model.bench.providers, skip_unavailable=model.parity.skip_unavailable)


def _clear_stale_reports(out_dir: Path) -> None:
    """A reports folder describes one run: model reports of earlier runs go (only files
    onnxtax wrote: JSON carrying its schema), and so do the run-level files when the
    folder holds an earlier run's ci.json, so a run killed before its end never leaves
    an older run's junit.xml or summary beside its own model reports."""
    if not out_dir.is_dir():
        return
    earlier_run = False
    for path in out_dir.glob("*.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and data.get("schema") == MODEL_SCHEMA:
            path.unlink(missing_ok=True)
        elif isinstance(data, dict) and data.get("schema") == RUN_SCHEMA and path.name == "ci.json":
            earlier_run = True
    if earlier_run:
        for name in REPORT_FILES:
            (out_dir / name).unlink(missing_ok=True)


def _run_model(model: ModelConfig, *, debug: bool, reuse: bool, on_stage: StageFn | None,
               on_message: MessageFn | None) -> ModelRun:
    from onnxtax.manifest import read_manifest

    run = ModelRun(model.name, model, started_utc=_now_utc())
    t0 = time.perf_counter()
    source = _SourceModel(model.spec)  # built once, on first use, and handed to every stage
    steps: list[tuple[str, Callable[[StageResult, Callable[[str], None]], None]]] = [
        ("export", lambda st, say: (_stage_reuse(model, st, say) if reuse and _has_artifact(model)
                                    else _stage_export(model, source, st, say, debug))),
        ("lint", lambda st, say: _stage_lint(model, source, st, say)),
        ("parity", lambda st, say: _stage_parity(model, source, st, say)),
        ("runtimes", lambda st, say: _stage_runtimes(model, source, st, say)),
        ("verify", lambda st, say: _stage_verify(model, st, say)),
        ("bench", lambda st, say: _stage_bench(model, source, st, say)),
        ("quantize", lambda st, say: _stage_quantize(model, source, st, say)),
    ]
    blocked: str | None = None
    for name, fn in steps:
        stage = StageResult(name)
        run.stages[name] = stage
        if _stage_off(model, name):
            stage.status, stage.summary = "off", "not configured"
            continue
        if blocked is not None:
            stage.summary = f"not run: {STAGE_TITLES[blocked]} did not pass"
            continue
        if on_stage:
            on_stage(model.name, name, None)

        def say(message: str, _name: str = name) -> None:
            if on_message:
                on_message(model.name, _name, message)

        t_stage = time.perf_counter()
        try:
            fn(stage, say)
        except (OnnxtaxError, CheckFailed) as exc:
            # a usage problem is an error (exit 2); a check that failed is a failure (exit 1)
            stage.status = "error" if isinstance(exc, OnnxtaxError) else "failed"
            stage.error, stage.hint, stage.summary = exc.message, exc.hint, exc.message
            if debug:
                stage.traceback = traceback.format_exc()
        stage.seconds = time.perf_counter() - t_stage
        if name == "export":
            try:
                run.manifest = read_manifest(model.output, required=False) if stage.status == "passed" else None
            except OnnxtaxError:
                run.manifest = None
        if on_stage:
            on_stage(model.name, name, stage)
        if stage.status != "passed":
            blocked = name
    parity = run.stages.get("parity")
    run.providers = _provider_verdicts(model, parity.result if parity and parity.result is not None else None,
                                       parity)
    run.seconds = time.perf_counter() - t0
    return run


# --------------------------------------------------------------------------- stages


def _counting(say: Callable[[str], None]):
    """A stage's Progress as one line for ci's display: `step (done/total)`."""

    def progress(message: str, done: int | None = None, total: int | None = None) -> None:
        say(f"{message} ({done}/{total})" if total else message)

    return progress


class _SourceModel:
    """The model's eager source, loaded on first use and shared by every stage of one model:
    building a model (a transformers checkpoint, a 1 GB network) once instead of per stage."""

    def __init__(self, spec: str):
        self.spec = spec
        self._loaded = None

    def get(self):
        if self._loaded is None:
            from onnxtax.loading import load_model

            self._loaded = load_model(self.spec)
        return self._loaded

def _stage_export(model: ModelConfig, source: _SourceModel, stage: StageResult, say: Callable[[str], None],
                  debug: bool) -> None:
    from onnxtax.export import export_model
    from onnxtax.report import format_size

    result = export_model(source.get(), model.output, model.inputs, opset=model.opset, exporter=model.exporter,
                          dims=model.dims or None, output_names=model.output_names,
                          external_data=model.external_data, ranges=_ranges(model.ranges),
                          data_files=list(model.data) or None, debug=debug, progress=_counting(say),
                          target_ort=model.target_ort, verify_target=_target_verifier(model))
    stage.result = result
    if result.passed:
        stage.status = "passed"
        stage.summary = (f"{result.exporter}, opset {result.opset}, IR {result.ir_version}, "
                         f"{format_size(result.size_bytes)}")
        if result.warnings:
            stage.summary += f", {len(result.warnings)} warning{'s' if len(result.warnings) != 1 else ''}"
    else:
        stage.status, stage.error, stage.hint = "failed", result.error, result.hint
        stage.summary = result.error or "export failed"


def _target_verifier(model: ModelConfig):
    """With `target_ort`, export runs the file in that release, with the `[runtimes]` cache."""
    if not model.target_ort:
        return None
    from onnxtax.runtimes import target_verifier

    rt = model.runtimes
    return target_verifier(rt.cache_dir if rt else None, rt.offline if rt else False)


def _has_artifact(model: ModelConfig) -> bool:
    from onnxtax.manifest import manifest_path_for

    return model.output.is_file() and manifest_path_for(model.output).is_file()


def _stage_reuse(model: ModelConfig, stage: StageResult, say: Callable[[str], None]) -> None:
    """The export stage with an artifact made elsewhere: its manifest must be readable; the
    verify stage then checks its checksums and parity checks it against the source."""
    from onnxtax.manifest import manifest_path_for, read_manifest

    say("reading the existing artifact's manifest")
    manifest = read_manifest(model.output)
    assert manifest is not None
    sha = (manifest.get("artifact") or {}).get("sha256") or ""
    stage.status = "passed"
    stage.result = {"reused": True, "output": str(model.output), "manifest": str(manifest_path_for(model.output)),
                    "opset": manifest.get("opset"), "created_utc": manifest.get("created_utc"),
                    "versions": manifest.get("versions")}
    stage.summary = (f"reused the existing artifact (sha256 {sha[:12]}, opset {manifest.get('opset')}, "
                     f"exported {manifest.get('created_utc') or '?'})")


def _stage_lint(model: ModelConfig, source: _SourceModel, stage: StageResult, say: Callable[[str], None]) -> None:
    from onnxtax.lint import lint_model

    say("linting operators against the runtime")
    kwargs: dict[str, Any] = {"allow": model.lint.allow, "fail_on": model.lint.fail_on}
    if model.lint.source:
        kwargs.update(source=source.get(), inputs=model.input_specs)
    if model.lint.target_opset is not None:
        kwargs["target_opset"] = model.lint.target_opset
    if model.lint.target_ir is not None:
        kwargs["target_ir"] = model.lint.target_ir
    if model.target_ort is not None:
        kwargs["target_ort"] = model.target_ort
    if model.parity.providers:
        from onnxtax.providers import resolve_providers

        # the ones the preflight let through: unavailable ones are skipped (or were an error already)
        kwargs["providers"] = resolve_providers(model.parity.providers,
                                                skip_unavailable=model.parity.skip_unavailable)[0]
    result = lint_model(model.output, progress=_counting(say), **kwargs)
    stage.result = result
    stage.status = "passed" if result else "failed"
    stage.summary = _lint_summary(result)
    if not result:
        first = result.failing[0]
        stage.error = f"{len(result.failing)} finding{'s' if len(result.failing) != 1 else ''} at or above " \
                      f"{result.fail_on}; first: {first.rule}" + (f" ({first.where})" if first.where else "") + \
                      f": {first.message}"
        stage.hint = first.hint or None


def _lint_summary(result: Any) -> str:
    counts = result.counts()
    parts = [f"{counts[k]} {k}{'s' if counts[k] != 1 else ''}" for k in ("error", "warning", "info") if counts[k]]
    if counts.get("allowed"):
        parts.append(f"{counts['allowed']} allowed")
    text = ", ".join(parts) or "no findings"
    if result.failing:
        first = result.failing[0]
        where = f" ({first.where})" if first.where else ""
        text += f"; {first.rule}{where}: {first.message}"
    return text[:300]


def _ranges(texts: dict[str, str]) -> dict:
    """Config ranges ("LOW:HIGH" per input) as the stages take them."""
    from onnxtax.specs import parse_ranges

    return parse_ranges([f"{k}={v}" for k, v in texts.items()])


def _stage_parity(model: ModelConfig, source: _SourceModel, stage: StageResult, say: Callable[[str], None]
                  ) -> None:
    from onnxtax.parity import check_parity

    p = model.parity
    ranges = _ranges(p.ranges)
    tolerances = {name: p.tolerance_of(name) for name in p.tolerances}

    result = check_parity(source.get(), model.output, model.inputs, dims=p.dims or None, seed=p.seed, ranges=ranges,
                          data_files=p.data or None, tolerances=tolerances, providers=p.providers or None,
                          skip_unavailable=p.skip_unavailable, fail_on_fallback=p.fail_on_fallback,
                          opt_level=p.opt_level, threads=p.threads, samples=p.samples, rtol=p.rtol, atol=p.atol,
                          min_cosine=p.min_cosine, allow_constant=p.allow_constant, test_assumed=p.test_assumed,
                          progress=_counting(say), localize=p.localize,
                          localize_budget_s=p.localize_budget_s)
    stage.result = result
    stage.status = "passed" if result else "failed"
    if not result and not any(pr.status != "skipped" for pr in result.providers):
        from onnxtax.providers import compute_providers

        stage.hint = (f"none of the providers asked for is on this host (it has {', '.join(compute_providers())}); "
                      "list one it has, or run this model on a host that has them")
    elif not result:
        stage.hint = (f"the model report has every provider x shape x output; `onnxtax parity {model.spec} "
                      f"{model.output}` shows the table")
    parts, missing = [], []
    for pr in result.providers:
        if pr.status == "skipped":
            missing.append(pr.label)
            continue
        ok = sum(1 for c in pr.cases if c.passed)
        text = f"{pr.label} {ok}/{len(pr.cases)}" if pr.status == "passed" else f"{pr.label} {pr.status}"
        if pr.status != "passed" and pr.cases:
            text += f" ({ok}/{len(pr.cases)} passed)"
        if pr.placement is not None and pr.placement.fell_back:
            text += f" ({pr.placement.fallback_count} nodes fell back)"
        parts.append(text)
    if missing:
        parts.append("not available: " + ", ".join(missing))
    stage.summary = "; ".join(parts) or "no provider"
    if not result:
        stage.error = result.failures[0] if result.failures else "parity failed"
        if len(result.failures) > 1:
            stage.error += f" (+{len(result.failures) - 1} more)"


def _stage_verify(model: ModelConfig, stage: StageResult, say: Callable[[str], None]) -> None:
    from onnxtax.manifest import verify_artifact

    say("recomputing checksums")
    result = verify_artifact(model.output)
    stage.result = result
    stage.status = "passed" if result else "failed"
    if result:
        stage.summary = (f"{len(result.files)} files match the manifest" if len(result.files) != 1
                         else "1 file matches the manifest")
    else:
        bad = ", ".join(f"{f.file} {f.status}" for f in result.files if f.status != "ok")
        stage.summary = stage.error = f"checksum mismatch: {bad}"
        stage.hint = "something changed the artifact after export (a concurrent writer, a post-processing step)"


def _stage_bench(model: ModelConfig, source: _SourceModel, stage: StageResult, say: Callable[[str], None]) -> None:
    from onnxtax.bench import run_bench

    b = model.bench
    assert b is not None
    providers = b.providers if b.providers is not None else (model.parity.providers or None)

    result = run_bench(source.get(), model.output, model.input_specs, batch_sizes=b.batch_sizes, dims=b.dims or None,
                       providers=providers, skip_unavailable=model.parity.skip_unavailable, threads=b.threads,
                       opt_level=b.opt_level, cold_start=b.cold_start, max_latency_ms=b.max_latency_ms or None,
                       min_speedup=b.min_speedup,
                       ranges=_ranges(model.ranges),
                       seed=model.parity.seed, warmup=b.warmup, min_time=b.min_time, progress=_counting(say))
    stage.result = result
    stage.status = "passed" if result else "failed"
    stage.summary = _bench_summary(result)
    if not result:
        stage.error = "; ".join(result.failures + [g.message for g in result.failed_gates])[:400]
        stage.hint = ("`onnxtax parity` at that batch size shows what the graph computes there" if result.failures
                      else "`onnxtax bench` on the model shows the full latency table; adjust the gate or the model")


def _stage_off(model: ModelConfig, name: str) -> bool:
    """runtimes, bench and quantize run only when their table is configured."""
    return name in ("runtimes", "bench", "quantize") and getattr(model, name) is None


def _stage_quantize(model: ModelConfig, source: _SourceModel, stage: StageResult, say: Callable[[str], None]) -> None:
    """INT8 from the exported artifact, approved per segment (onnxtax.quantize); written only when approved."""
    from onnxtax.quantize import quantize_model

    from onnxtax.providers import resolve_providers

    q = model.quantize
    assert q is not None
    # the parity providers the preflight let through: unavailable ones are skipped (or were an error already)
    usable = resolve_providers(model.parity.providers or None, skip_unavailable=model.parity.skip_unavailable)[0]
    result = quantize_model(source.get(), model.output, q.output, evals=q.evals, budgets=q.budgets,
                            inputs=model.inputs, mode=q.mode, calibration=q.calibration,
                            calibration_method=q.calibration_method, quant_format=q.format,
                            per_channel=q.per_channel, labels=q.labels, segment_key=q.segment_key,
                            output_name=q.output_name, exclude=q.exclude, auto_exclude=q.auto_exclude,
                            max_exclude=q.max_exclude, providers=[p.label for p in usable] or None,
                            batch_size=q.batch_size, bench_batch_sizes=q.bench_batch_sizes,
                            bench_min_time=q.bench_min_time, min_speedup=q.min_speedup, progress=_counting(say))
    stage.result = result
    stage.status = "passed" if result else "failed"
    best = result.best
    if result:
        lat = best.latency[0] if best and best.latency else None
        stage.summary = (f"{best.label}: {len(result.segments)} segments within budgets, "
                         f"{result.size['ratio']:.1f}x smaller"
                         + (f", batch {lat.batch_size} {lat.speedup:.2f}x FP32 speed" if lat else "")
                         + f" -> {q.output.name}")
    else:
        stage.error = result.failures[0] if result.failures else "no INT8 build met the budgets"
        stage.summary = f"refused ({len(result.failures)} budget failure(s)); nothing written"
        stage.hint = ("`onnxtax quantize` with the same arguments shows every segment; calibrate on "
                      "representative data, or set auto_exclude = true")


def _bench_summary(result: Any) -> str:
    parts = []
    for batch in result.batches[:1] + result.batches[-1:] if len(result.batches) > 1 else result.batches:
        for path in batch.ort_paths:
            sp = batch.speedup(path)
            parts.append(f"batch {batch.batch_size} {path} p50 {_ms(batch.latency[path].p50_ms)}"
                         + (f" ({sp:.1f}x eager)" if sp else ""))
    gates = f"; {sum(g.passed for g in result.gates)}/{len(result.gates)} gates" if result.gates else ""
    return ", ".join(parts) + gates


def _ms(ms: float) -> str:
    return f"{ms * 1000:.3g} µs" if ms < 1 else f"{ms:.3g} ms"


# --------------------------------------------------------------------------- provider verdicts

def _provider_verdicts(model: ModelConfig, parity: Any, stage: StageResult | None = None) -> list[ProviderVerdict]:
    """One verdict per configured provider. Without a parity result (stage not run or
    errored), providers this host lacks are "not_available", the others "not_run"."""
    if parity is not None:
        out = []
        for pr in parity.providers:
            placement = pr.placement.to_dict() if pr.placement is not None else None
            if placement:
                placement = {k: placement[k] for k in ("method", "total_nodes", "on_provider", "fallback",
                                                       "fallback_op_types")}
            if pr.status == "skipped":
                verdict = "not_available"
            elif pr.status == "passed":
                verdict = "fell_back" if pr.placement is not None and pr.placement.fell_back else "passed"
            else:
                verdict = pr.status if pr.status in VERDICTS else "failed"
            reason = pr.reason
            bad = [c for c in pr.cases if not c.passed]
            if verdict in ("failed", "error") and bad:
                first = f"{bad[0].shape} {bad[0].output}: {bad[0].reason}"
                more = f" (+{len(bad) - 1} more of {len(pr.cases)} cases)" if len(bad) > 1 else ""
                reason = f"{reason}; {first}{more}" if reason else first + more
            if verdict == "fell_back" and not reason:
                ops = ", ".join(pr.placement.fallback_op_types)
                reason = f"{pr.placement.fallback_count} of {pr.placement.total_nodes} nodes ran elsewhere ({ops})"
            out.append(ProviderVerdict(pr.request.name, pr.label, verdict, reason, placement))
        return out
    from onnxtax.providers import available_providers, compute_providers, parse_provider

    texts = model.parity.providers or compute_providers()
    why = "not run"
    if stage is not None and stage.status == "error":
        why = f"parity could not run: {stage.error}"
    elif stage is not None and stage.summary:
        why = stage.summary
    out = []
    for text in texts:
        try:
            req = parse_provider(text)
        except OnnxtaxError:
            continue
        if req.name in available_providers():
            out.append(ProviderVerdict(req.name, req.label, "error" if stage and stage.status == "error"
                                       else "not_run", why))
        else:
            out.append(ProviderVerdict(req.name, req.label, "not_available", "not available on this host"))
    return out


def _stage_runtimes(model: ModelConfig, source: _SourceModel, stage: StageResult, say: Callable[[str], None]
                    ) -> None:
    """The artifact on each `[runtimes] ort` release, against the eager model, with parity's
    shapes, samples, ranges and tolerances."""
    from onnxtax.runtimes import check_runtimes
    from onnxtax.specs import parse_ranges

    rt = model.runtimes
    assert rt is not None
    p = model.parity
    report = check_runtimes(model.output, rt.ort, source.get(), model.inputs, dims=p.dims or None,
                            samples=p.samples, seed=p.seed,
                            ranges=parse_ranges([f"{k}={v}" for k, v in p.ranges.items()]), data_files=p.data,
                            rtol=p.rtol, atol=p.atol, tolerances={name: p.tolerance_of(name) for name in p.tolerances},
                            min_cosine=p.min_cosine,
                            providers=rt.providers or None, opt_level=p.opt_level, cache_dir=rt.cache_dir,
                            offline=rt.offline, progress=_counting(say))
    stage.result = report
    stage.status = "passed" if report.passed else "failed"
    lowest = report.minimum_passing or "none"
    stage.summary = (f"{len(report.versions)} release(s) x {len({r.label for r in report.results})} provider(s); "
                     f"lowest passing {lowest}")
    if not report.passed:
        stage.error = report.failures[0]
        stage.summary += f"; {len(report.failures)} failure(s): {report.failures[0]}"


# --------------------------------------------------------------------------- JUnit

def _stage_cases(model: str, stage: StageResult) -> list:
    from onnxtax.report import JUnitCase

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
             "", "| model | " + " | ".join(STAGE_TITLES[s] for s in STAGES) + " | time |",
             "|---|" + "---|" * len(STAGES) + "---|"]
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
        lines.append(f"| **{run.name}** | " + " | ".join(cells) + f" | {run.seconds:.1f} s |")
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


def _runtimes_markdown(report: CiReport) -> list[str]:
    """model x onnxruntime release x provider, for the models with a runtimes stage."""
    from onnxtax.runtimes import cell_text

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
    from onnxtax.files import write_output
    from onnxtax.report import append_github_summary, jsonable, write_junit

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
