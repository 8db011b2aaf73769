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
"""

from __future__ import annotations

import json
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from onnxtax.ci.report import (MODEL_SCHEMA, PASSING, REPORT_FILES, REPORTS_FLAG, RUN_SCHEMA, RUNNING_FILE,
                               RUNNING_SCHEMA, STAGE_TITLES, STAGES, VERDICT_TEXT, VERDICTS, CiReport, ModelRun,
                               ProviderVerdict, StageResult, summary_markdown, write_reports)
from onnxtax.ci.config import ModelConfig, OnnxtaxConfig
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
        bench: False skips the configured benchmarks.
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
    if write:
        from onnxtax.core.files import check_output
        from onnxtax.core.report import check_github_summary

        check_output(out_dir, "--reports", folder=True)
        check_github_summary()
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
    from onnxtax.core.manifest import read_manifest

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
            from onnxtax.core.loading import load_model

            self._loaded = load_model(self.spec)
        return self._loaded

def _stage_export(model: ModelConfig, source: _SourceModel, stage: StageResult, say: Callable[[str], None],
                  debug: bool) -> None:
    from onnxtax.export.run import export_model
    from onnxtax.core.report import format_size

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
    from onnxtax.runtimes.matrix import target_verifier

    rt = model.runtimes
    return target_verifier(rt.cache_dir if rt else None, rt.offline if rt else False)


def _has_artifact(model: ModelConfig) -> bool:
    from onnxtax.core.manifest import manifest_path_for

    return model.output.is_file() and manifest_path_for(model.output).is_file()


def _stage_reuse(model: ModelConfig, stage: StageResult, say: Callable[[str], None]) -> None:
    """The export stage with an artifact made elsewhere: its manifest must be readable; the
    verify stage then checks its checksums and parity checks it against the source."""
    from onnxtax.core.manifest import manifest_path_for, read_manifest

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
        from onnxtax.core.providers import resolve_providers

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
    from onnxtax.core.specs import parse_ranges

    return parse_ranges([f"{k}={v}" for k, v in texts.items()])


def _stage_parity(model: ModelConfig, source: _SourceModel, stage: StageResult, say: Callable[[str], None]
                  ) -> None:
    from onnxtax.parity.run import check_parity

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
        from onnxtax.core.providers import compute_providers

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
    from onnxtax.core.manifest import verify_artifact

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
    from onnxtax.bench.run import run_bench

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
    """INT8 from the exported artifact, approved per segment (onnxtax.quantize.run); written only when approved."""
    from onnxtax.quantize.run import quantize_model

    from onnxtax.core.providers import resolve_providers

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
    from onnxtax.core.providers import available_providers, compute_providers, parse_provider

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
    from onnxtax.runtimes.matrix import check_runtimes
    from onnxtax.core.specs import parse_ranges

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
