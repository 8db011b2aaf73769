"""`onnxtax ci`: the whole chain for every configured model, as one CI step.

Per model, in order: export (with all export checks) -> lint-ops -> parity on every
configured provider -> runtimes (the onnxruntime releases of `[runtimes] ort`) -> manifest verify ->
bench -> serve-bench -> quantize -> sign (runtimes, bench, serve and quantize only when configured; sign
with `[sign] key`, so an artifact is signed only after every gate passed). A stage that
fails marks the later stages of that model "not_run"; the next model still runs unless
`keep_going=False`. Usage errors inside a stage (a model that does not build, a
provider this host lacks without `skip_unavailable`) are recorded as status "error",
not raised, so one broken model never hides the others' results; the exit code is
then 2. Configuration problems are found before anything runs (config.load_config
and the provider pre-flight) and raise.
"""

from __future__ import annotations

import json
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from onnxtax.ci.report import (MODEL_SCHEMA, PASSING, REPORT_FILES, REPORTS_FLAG, RUN_SCHEMA, RUNNING_FILE, RUNNING_SCHEMA, STAGE_TITLES, STAGES, VERDICT_TEXT, VERDICTS, CiReport, ModelRun, ProviderVerdict, StageResult)
from onnxtax.ci.config import ModelConfig, OnnxtaxConfig
from onnxtax.ci.files import summary_markdown, write_reports
from onnxtax.ci.stages import (ModelContext, has_artifact, provider_verdicts, stage_bench, stage_export, stage_lint,
                               stage_off, stage_parity, stage_quantize, stage_reuse, stage_runtimes, stage_serve,
                               stage_sign,
                               stage_verify)
from onnxtax.core.errors import CheckFailed, OnnxtaxError

# the results and their report files live in onnxtax.ci.report; importable from here as before
__all__ = ["MODEL_SCHEMA", "PASSING", "REPORT_FILES", "REPORTS_FLAG", "RUN_SCHEMA", "STAGE_TITLES", "STAGES",
           "VERDICT_TEXT", "VERDICTS", "CiReport", "ModelRun", "ProviderVerdict", "StageResult", "run_ci",
           "default_host_label", "summary_markdown", "write_reports"]

StageFn = Callable[[str, str, "StageResult | None"], None]  # (model, stage, result or None at start)
MessageFn = Callable[[str, str, str], None]  # (model, stage, message)


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
        bench: False skips the configured benchmarks (bench and serve).
        host_label: the name this host gets in merged matrices (default: hostname + ORT package).
        reuse_artifacts: test the artifact already at a model's output (with its manifest) instead
            of exporting again, e.g. one downloaded from the job that exported it, so that every
            host checks the same bytes; models without one are exported.
        on_stage: called as (model, stage, None) when a stage starts and (model, stage, result) when done.
        on_message: progress inside a stage, as (model, stage, message).

    Raises OnnxtaxError for an unknown --only name or provider, before any model runs.
    """
    from onnxtax.core.report import host_facts

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
    planned_files(config, models, out_dir if write else None).check()  # before any model runs
    if write:
        report.reports_dir = str(out_dir)
        _clear_stale_reports(out_dir)
    stop = False

    def stage_started(model_name: str, stage_name: str, result: Any) -> None:
        if write and result is None:
            _mark_running(out_dir, model_name, stage_name)
        if on_stage:
            on_stage(model_name, stage_name, result)

    try:
        for model in models:
            if stop:
                run = _not_run(model, "not run: an earlier model failed (--fail-fast)")
            else:
                run = _run_model(model, debug=debug, reuse=reuse_artifacts, on_stage=stage_started,
                                 on_message=on_message)
            report.models.append(run)
            if write:
                from onnxtax.core.files import write_output

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
            (out_dir / RUNNING_FILE).unlink(missing_ok=True)
            report.files = [str(p) for p in write_reports(report, out_dir)]
        raise
    report.seconds = time.perf_counter() - started
    if write:
        (out_dir / RUNNING_FILE).unlink(missing_ok=True)
        report.files = [str(p) for p in write_reports(report, out_dir)]
    return report


def planned_files(config: OnnxtaxConfig, models: list[ModelConfig], out_dir: Path | None):
    """What the run reads (the config, every model's source, data, evaluation and calibration files,
    a reused artifact) and writes (each model's artifact and INT8 build, the reports): no output may
    be an input, and each must be writable."""
    import os

    from onnxtax.ci.report import REPORT_FILES, RUNNING_FILE
    from onnxtax.core.paths import PlannedFiles

    files = PlannedFiles().read(config.path, "the config file")
    for m in models[:1]:  # the keys are the same for every model
        files.read(m.sign_key, "the [sign] key").read(m.verify_key, "the [verify] key")
    for m in models:
        files.read_spec(m.spec)
        for path in list(m.export.data_files) + [p for p in m.parity.data_files if p not in m.export.data_files]:
            files.read(path, f"a data file of model {m.name}")
        if m.quantize is not None:
            for entry in m.quantize.evals:
                files.read(entry.partition("=")[2] or entry, f"an evaluation file of model {m.name}")
            for path in m.quantize.calibration:
                files.read(path, f"a calibration file of model {m.name}")
    for m in models:
        files.write_artifact(m.output, f"the artifact of model {m.name}", probe=False)
        if m.quantize_output is not None:
            files.write_artifact(m.quantize_output, f"the INT8 artifact of model {m.name}", probe=False)
    if out_dir is not None:
        files.write(out_dir, REPORTS_FLAG, folder=True)
        for name in [f"{m.name}.json" for m in models] + list(REPORT_FILES) + [RUNNING_FILE]:
            files.write(out_dir / name, f"{REPORTS_FLAG} ({name})", probe=False)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            files.write(summary, "$GITHUB_STEP_SUMMARY", append=True)
    return files


def _mark_running(out_dir: Path, model: str, stage: str) -> None:
    """running.json before a stage (see ci_report.RUNNING_FILE)."""
    import os

    from onnxtax.core.files import write_output
    from onnxtax.core.memory import available_memory, current_rss_bytes

    try:
        available, source = available_memory()
    except OnnxtaxError as exc:  # a bad ONNXTAX_MEMORY_LIMIT: the stage itself reports it
        available, source = None, exc.message
    write_output(out_dir / RUNNING_FILE, {
        "schema": RUNNING_SCHEMA, "model": model, "stage": stage, "started_utc": _now_utc(), "pid": os.getpid(),
        "rss_bytes": current_rss_bytes(), "available_bytes": available, "available_source": source,
        "note": "written before each stage, removed when the run ends: present afterwards, the process ended "
                "during this stage (killed: SIGKILL, e.g. the OOM killer, exit 137; or crashed)"}, REPORTS_FLAG)


def _not_run(model: ModelConfig, why: str) -> ModelRun:
    run = ModelRun(model.name, model, started_utc=_now_utc())
    for name in STAGES:
        run.stages[name] = StageResult(name, "off" if stage_off(model, name) else "not_run", summary=why)
    run.providers = provider_verdicts(model, None)
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
            model.bench.providers = list(providers)
    elif skip_unavailable is not None:
        model.parity.skip_unavailable = skip_unavailable
    if model.bench is not None:
        model.bench.skip_unavailable = model.parity.skip_unavailable
    if not bench:
        model.bench = None
        model.serve = None
    return model


def _preflight_providers(model: ModelConfig) -> None:
    """Unknown provider names, and ones this host lacks (unless skipped), are usage
    errors: found before minutes of exports, not after."""
    from onnxtax.core.providers import resolve_providers

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
        if isinstance(data, dict) and data.get("schema") in (MODEL_SCHEMA, RUNNING_SCHEMA):
            path.unlink(missing_ok=True)
        elif isinstance(data, dict) and data.get("schema") == RUN_SCHEMA and path.name == "ci.json":
            earlier_run = True
    if earlier_run:
        for name in REPORT_FILES:
            (out_dir / name).unlink(missing_ok=True)


def _run_model(model: ModelConfig, *, debug: bool, reuse: bool, on_stage: StageFn | None,
               on_message: MessageFn | None) -> ModelRun:
    run = ModelRun(model.name, model, started_utc=_now_utc())
    t0 = time.perf_counter()
    ctx = ModelContext(model, reused=reuse and has_artifact(model))  # the eager model built once, the artifact
    # opened once, for every stage
    steps: list[tuple[str, Callable[[StageResult, Callable[[str], None]], None]]] = [
        ("export", lambda st, say: (stage_reuse(ctx, st, say) if reuse and has_artifact(model)
                                    else stage_export(ctx, st, say, debug))),
        ("lint", lambda st, say: stage_lint(ctx, st, say)),
        ("parity", lambda st, say: stage_parity(ctx, st, say)),
        ("runtimes", lambda st, say: stage_runtimes(ctx, st, say)),
        ("verify", lambda st, say: stage_verify(ctx, st, say)),
        ("bench", lambda st, say: stage_bench(ctx, st, say)),
        ("serve", lambda st, say: stage_serve(ctx, st, say)),
        ("quantize", lambda st, say: stage_quantize(ctx, st, say)),
        ("sign", lambda st, say: stage_sign(ctx, st, say, run.stages)),  # only after every gate passed
    ]
    blocked: str | None = None
    for name, fn in steps:
        stage = StageResult(name)
        run.stages[name] = stage
        if stage_off(model, name):
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
        if name == "sign" and stage.status == "passed":
            run.manifest = ctx.artifact().manifest  # with its signing record
        if name == "export":
            try:
                run.manifest = ctx.artifact().manifest if stage.status == "passed" else None
            except OnnxtaxError:
                run.manifest = None
        if on_stage:
            on_stage(model.name, name, stage)
        if stage.status != "passed":
            blocked = name
    parity = run.stages.get("parity")
    run.providers = provider_verdicts(model, parity.result if parity and parity.result is not None else None,
                                       parity)
    run.seconds = time.perf_counter() - t0
    return run


# --------------------------------------------------------------------------- stages


# --------------------------------------------------------------------------- provider verdicts


