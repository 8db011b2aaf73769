"""The stages of one model in `onnxtax ci`, each given the same ModelContext: the eager model built
once (on first use), the artifact opened once after export, and the model's options from the config."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

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
    reused: bool = False  # the artifact was made elsewhere (--reuse-artifacts), not exported by this run

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
    """runtimes, bench, serve and quantize run only when their table is configured; sign with `[sign] key`."""
    if name == "sign":
        return model.sign_key is None
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


@contextmanager
def checking_key(model: ModelConfig) -> Iterator[Path | None]:
    """The public key signatures are checked with: `[verify] key`, else the public half of `[sign] key`
    (written to a temporary file for model_signing), else None."""
    if model.verify_key is not None or model.sign_key is None:
        yield model.verify_key
        return
    import tempfile

    from onnxtax.verify.keys import public_pem

    with tempfile.TemporaryDirectory(prefix="onnxtax-key-") as tmp:
        path = Path(tmp) / "sign.pub"
        path.write_bytes(public_pem(model.sign_key))
        yield path


def stage_verify(ctx: ModelContext, stage: StageResult, say: Say) -> None:
    """Checksums, and the signature when a key is configured. A required signature that this run
    will add (`[sign]`, on an artifact it exported) is checked by the sign stage instead."""
    from onnxtax.verify import verify_artifact

    model = ctx.config
    require = model.require_signature and (ctx.reused or model.sign_key is None)
    with checking_key(model) as key:
        say("checking the signature and recomputing checksums" if key else "recomputing checksums")
        result = verify_artifact(model.output, key=key, require_signature=require)
    stage.result = result
    stage.status = "passed" if result else "failed"
    sig = result.signature
    signed = {"verified": f"; signature verified ({sig.signed_fingerprint})", "not_checked": "; signed (not checked)"
              }.get(sig.status, "") if sig is not None else ""
    if result:
        stage.summary = (f"{len(result.files)} files match the manifest" if len(result.files) != 1
                         else "1 file matches the manifest") + signed
    else:
        bad = ", ".join(f"{f.file} {f.status}" for f in result.files if f.status != "ok")
        stage.summary = stage.error = "; ".join(result.signature_problems + ([f"checksum mismatch: {bad}"] if bad
                                                                             else []))
        stage.hint = ("sign the artifact where it is built ([sign] key), or give the [verify] key it was signed with"
                      if sig is not None and sig.status == "unsigned" else
                      "something changed the artifact after export or signing (a concurrent writer, a "
                      "post-processing step)")


def stage_sign(ctx: ModelContext, stage: StageResult, say: Say, stages: dict) -> None:
    """After every gate passed: sign the artifact (and its INT8 build) with the gates' reports in its
    provenance, then check each signature with the key a deployment will use."""
    from onnxtax.core.report import jsonable
    from onnxtax.verify import gate_entry, sign_artifact, verify_artifact

    model = ctx.config
    assert model.sign_key is not None
    gates = [gate_entry(name, jsonable(st.result.to_dict()), "run") for name in ("lint", "parity", "runtimes", "bench")
             for st in [stages.get(name)] if st is not None and st.status == "passed" and st.result is not None]
    say(f"signing {model.output.name}")
    signed = [sign_artifact(model.output, model.sign_key, gates=gates, builder="ci")]
    quant = stages.get("quantize")
    if quant is not None and quant.status == "passed" and model.quantize_output and model.quantize_output.is_file():
        say(f"signing {model.quantize_output.name}")
        signed.append(sign_artifact(model.quantize_output, model.sign_key, builder="ci",
                                    gates=[gate_entry("quantize", jsonable(quant.result.to_dict()), "run")]))
    checks = []
    with checking_key(model) as key:
        for report in signed:
            if report.passed:
                say(f"checking the signature of {Path(report.model).name}")
                checks.append(verify_artifact(report.model, key=key, require_signature=True))
    ctx.artifact().reread_manifest()
    stage.result = {"signed": [r.to_dict() for r in signed], "checks": [c.to_dict() for c in checks]}
    refused = [r for r in signed if not r.passed]
    failed = [c for c in checks if not c.passed]
    if refused or failed:
        stage.status = "failed"
        stage.summary = stage.error = (f"{Path(refused[0].model).name}: {refused[0].refused}" if refused
                                       else f"{Path(failed[0].model).name}: {'; '.join(failed[0].problems)}")
        stage.hint = "nothing deployable is signed until every artifact signs and verifies"
        return
    names = ", ".join(Path(r.model).name for r in signed)
    attested = sorted({g["gate"] for r in signed for g in r.gates})
    stage.status = "passed"
    stage.summary = (f"signed {names} with {signed[0].key_fingerprint[:19]}…; provenance: "
                     f"{', '.join(attested)}; signature verified")


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
