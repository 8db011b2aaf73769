"""The stages of one model in `onnxtax ci`, each given the same ModelContext: the eager model built
once (on first use), the artifact opened once after export, and the model's options from the config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from onnxtax.ci.config import ModelConfig
from onnxtax.ci.report import VERDICTS, ProviderVerdict, StageResult
from onnxtax.core.errors import OnnxtaxError

Say = Callable[[str], None]


def counting(say: Say):
    """A stage's Progress as one line for ci's display: `step (done/total)`."""

    def progress(message: str, done: int | None = None, total: int | None = None) -> None:
        say(f"{message} ({done}/{total})" if total else message)

    return progress


@dataclass
class ModelContext:
    """What every stage of one model shares: the eager source, built on first use (a transformers
    checkpoint, a 1 GB network: once, not per stage), and the artifact, opened once after export
    (its manifest, graph without weights, inputs and weights' size read once for every stage)."""

    config: ModelConfig
    _loaded: Any = None
    _artifact: Any = None

    def source(self):
        if self._loaded is None:
            from onnxtax.core.loading import load_model

            self._loaded = load_model(self.config.spec)
        return self._loaded

    def artifact(self):
        if self._artifact is None:
            from onnxtax.core.artifact import open_artifact

            self._artifact = open_artifact(self.config.output)
        return self._artifact

    def usable_providers(self) -> list:
        """The parity providers the preflight let through: unavailable ones are skipped (or were an error)."""
        from onnxtax.core.providers import resolve_providers

        p = self.config.parity
        return resolve_providers(p.providers or None, skip_unavailable=p.skip_unavailable)[0]


def stage_off(model: ModelConfig, name: str) -> bool:
    """runtimes, bench and quantize run only when their table is configured."""
    return name in ("runtimes", "bench", "serve", "quantize") and getattr(model, name) is None


# --------------------------------------------------------------------------- export


def stage_export(ctx: ModelContext, stage: StageResult, say: Say, debug: bool) -> None:
    from onnxtax.core.report import format_size
    from onnxtax.export import export_model

    model = ctx.config
    result = export_model(ctx.source(), model.output, model.inputs, model.export, debug=debug,
                          progress=counting(say), verify_target=_target_verifier(model))
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


def has_artifact(model: ModelConfig) -> bool:
    from onnxtax.core.manifest import manifest_path_for

    return model.output.is_file() and manifest_path_for(model.output).is_file()


def stage_reuse(ctx: ModelContext, stage: StageResult, say: Say) -> None:
    """The export stage with an artifact made elsewhere: its manifest must be readable; the
    verify stage then checks its checksums and parity checks it against the source."""
    from onnxtax.core.manifest import read_manifest

    say("reading the existing artifact's manifest")
    model = ctx.config
    manifest = read_manifest(model.output)
    assert manifest is not None
    sha = (manifest.get("artifact") or {}).get("sha256") or ""
    stage.status = "passed"
    stage.result = {"reused": True, "output": str(model.output), "manifest": str(ctx.artifact().manifest_path),
                    "opset": manifest.get("opset"), "created_utc": manifest.get("created_utc"),
                    "versions": manifest.get("versions")}
    stage.summary = (f"reused the existing artifact (sha256 {sha[:12]}, opset {manifest.get('opset')}, "
                     f"exported {manifest.get('created_utc') or '?'})")


# --------------------------------------------------------------------------- lint, parity, runtimes, verify


def stage_lint(ctx: ModelContext, stage: StageResult, say: Say) -> None:
    import dataclasses

    from onnxtax.lint import lint_model

    model = ctx.config
    say("linting operators against the runtime")
    options = dataclasses.replace(model.lint, providers=ctx.usable_providers() if model.parity.providers else [])
    source = dict(source=ctx.source(), inputs=model.input_specs) if model.lint_source else {}
    result = lint_model(ctx.artifact(), options, progress=counting(say), **source)
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


def stage_parity(ctx: ModelContext, stage: StageResult, say: Say) -> None:
    from onnxtax.parity import check_parity

    model = ctx.config
    result = check_parity(ctx.source(), ctx.artifact(), model.inputs, model.parity, progress=counting(say))
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


def stage_runtimes(ctx: ModelContext, stage: StageResult, say: Say) -> None:
    """The artifact on each `[runtimes] ort` release, against the eager model, with parity's
    shapes, samples, ranges and tolerances."""
    from onnxtax.runtimes import check_runtimes

    model = ctx.config
    assert model.runtimes is not None
    report = check_runtimes(ctx.artifact(), None, ctx.source(), model.inputs, model.runtimes, progress=counting(say))
    stage.result = report
    stage.status = "passed" if report.passed else "failed"
    lowest = report.minimum_passing or "none"
    stage.summary = (f"{len(report.versions)} release(s) x {len({r.label for r in report.results})} provider(s); "
                     f"lowest passing {lowest}")
    if not report.passed:
        stage.error = report.failures[0]
        stage.summary += f"; {len(report.failures)} failure(s): {report.failures[0]}"
    ctx.artifact().reread_manifest()  # the matrix is recorded in the manifest


def stage_verify(ctx: ModelContext, stage: StageResult, say: Say) -> None:
    from onnxtax.verify import verify_artifact

    say("recomputing checksums")
    result = verify_artifact(ctx.config.output)
    stage.result = result
    stage.status = "passed" if result else "failed"
    if result:
        stage.summary = (f"{len(result.files)} files match the manifest" if len(result.files) != 1
                         else "1 file matches the manifest")
    else:
        bad = ", ".join(f"{f.file} {f.status}" for f in result.files if f.status != "ok")
        stage.summary = stage.error = f"checksum mismatch: {bad}"
        stage.hint = "something changed the artifact after export (a concurrent writer, a post-processing step)"


# --------------------------------------------------------------------------- bench, quantize


def stage_bench(ctx: ModelContext, stage: StageResult, say: Say) -> None:
    from onnxtax.bench import run_bench

    model = ctx.config
    assert model.bench is not None
    result = run_bench(ctx.source(), ctx.artifact(), model.input_specs, model.bench, progress=counting(say))
    stage.result = result
    stage.status = "passed" if result else "failed"
    stage.summary = _bench_summary(result)
    if not result:
        stage.error = "; ".join(result.failures + [g.message for g in result.failed_gates])[:400]
        stage.hint = ("`onnxtax parity` at that batch size shows what the graph computes there" if result.failures
                      else "`onnxtax bench` on the model shows the full latency table; adjust the gate or the model")


def _bench_summary(result: Any) -> str:
    parts = []
    for batch in result.batches[:1] + result.batches[-1:] if len(result.batches) > 1 else result.batches:
        for path in batch.ort_paths:
            sp = batch.speedup(path)
            parts.append(f"batch {batch.batch_size} {path} p50 {_ms(batch.latency[path].p50_ms)}"
                         + (f" ({sp:.1f}x eager)" if sp else ""))
    gates = f"; {sum(g.passed for g in result.gates)}/{len(result.gates)} gates" if result.gates else ""
    return ", ".join(parts) + gates


def stage_serve(ctx: ModelContext, stage: StageResult, say: Say) -> None:
    """onnxtax serve-bench on the artifact: each path's load within the SLO, its hosts checked against
    the eager model with parity's shapes and rule, the gates of `[serve]`."""
    from onnxtax.serve import run_serve_bench

    model = ctx.config
    assert model.serve is not None
    result = run_serve_bench(model.spec, ctx.artifact(), model.inputs, model.serve, progress=counting(say))
    stage.result = result
    stage.status = "passed" if result else "failed"
    key, slo = result.slo["percentile"], result.slo["ms"]
    parts = [f"{p.id} {p.qps_at_slo:,.0f} rows/s" if p.qps_at_slo else f"{p.id} {p.status if p.status != 'measured' else 'none'}"
             for p in result.paths]
    gates = f"; {sum(g.passed for g in result.gates)}/{len(result.gates)} gates" if result.gates else ""
    stage.summary = f"within {key} <= {slo:g} ms: " + ", ".join(parts) + gates
    if not result:
        stage.error = "; ".join(result.failures + [g.message for g in result.failed_gates])[:400]
        stage.hint = ("a host's outputs differ: `onnxtax parity` on the model, and the host's own check in the "
                      "model report" if result.failures else "`onnxtax serve-bench` on the model shows every curve")


def _ms(ms: float) -> str:
    return f"{ms * 1000:.3g} µs" if ms < 1 else f"{ms:.3g} ms"


def stage_quantize(ctx: ModelContext, stage: StageResult, say: Say) -> None:
    """INT8 from the exported artifact, approved per segment (onnxtax.quantize); written only when approved."""
    import dataclasses

    from onnxtax.quantize import quantize_model

    model = ctx.config
    assert model.quantize is not None and model.quantize_output is not None
    options = dataclasses.replace(model.quantize, providers=[p.label for p in ctx.usable_providers()] or None)
    result = quantize_model(ctx.source(), ctx.artifact(), model.quantize_output, options, inputs=model.inputs,
                            progress=counting(say))
    stage.result = result
    stage.status = "passed" if result else "failed"
    best = result.best
    if result:
        lat = best.latency[0] if best and best.latency else None
        stage.summary = (f"{best.label}: {len(result.segments)} segments within budgets, "
                         f"{result.size['ratio']:.1f}x smaller"
                         + (f", batch {lat.batch_size} {lat.speedup:.2f}x FP32 speed" if lat else "")
                         + f" -> {model.quantize_output.name}")
    else:
        stage.error = result.failures[0] if result.failures else "no INT8 build met the budgets"
        stage.summary = f"refused ({len(result.failures)} budget failure(s)); nothing written"
        stage.hint = ("`onnxtax quantize` with the same arguments shows every segment; calibrate on "
                      "representative data, or set auto_exclude = true")


# --------------------------------------------------------------------------- provider verdicts


def provider_verdicts(model: ModelConfig, parity: Any, stage: StageResult | None = None) -> list[ProviderVerdict]:
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
            reason = pr.explanation
            bad = [c for c in pr.cases if not c.passed]
            if verdict in ("failed", "error") and bad:
                first = f"{bad[0].shape} {bad[0].output}: {bad[0].explanation}"
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
