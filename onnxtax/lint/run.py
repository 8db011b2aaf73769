"""`lint_model`: load the model once, ask the installed ORT about it, run the rules
(graph rules, provider placement, source rules) and apply the allow list."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from onnxtax.core.defaults import MEMORY_FACTORS
from onnxtax.core.errors import ConfigError
from onnxtax.core.artifact import Artifact, open_artifact
from onnxtax.lint.findings import RULES, SEVERITY_RANK, Finding, LintReport, parse_allow
from onnxtax.lint.graph import iter_graphs, iter_nodes
from onnxtax.core.memory import StageMeter
from onnxtax.lint.options import LintOptions
from onnxtax.lint.placement import rule_provider_fallback
from onnxtax.lint.rules import (LintContext, rule_baked_shape, rule_control_flow, rule_custom_op, rule_float64,
                                rule_ir_version, rule_opset, rule_runtime_load,
                                rule_target_runtime)
from onnxtax.core.providers import (load_error, ort_error_summary, ort_max_ir_version, ort_max_opset,
                               ort_package)
from onnxtax.core.specs import InputSpec

GRAPH_RULES = ("control-flow", "custom-op", "opset", "ir-version", "runtime-load", "float64", "baked-shape")


def lint_model(onnx_path: str | Path | Artifact | None, options: LintOptions | None = None, *, source: Any = None,
               inputs: list[InputSpec] | None = None, progress=None, **kwargs: Any) -> LintReport:
    """Lint an ONNX model (and, with `source`, the PyTorch model it came from).

    Args:
        onnx_path: the .onnx file (external data beside it is fine) or an opened Artifact; None with
            `source` and `inputs`: the source rules alone, before there is an ONNX file (an export that
            failed sends users here).
        options: LintOptions, or its fields as keyword arguments: target_opset / target_ir (the
            deployment runtime's limits), target_ort (a release such as "1.16": its limits from
            onnxtax.core.ort_compat), providers (placement checked for those on this host, the others
            reported as not checked), allow ("rule" or "rule:node" entries reported but not failing),
            fail_on ("error", "warning" or "info").
        source: a model spec ("file.py:Name"), a LoadedModel or an nn.Module, for the source rules.
        inputs: forward() inputs for the source rules; default: the manifest's.
    Returns:
        LintReport, truthy when nothing at/above fail_on is left.
    """
    start = time.perf_counter()
    say = progress or (lambda _msg: None)
    opts = LintOptions.build(options, **kwargs)
    fail_on, target_opset, target_ir, providers = opts.fail_on, opts.target_opset, opts.target_ir, opts.providers
    allow_entries = parse_allow(opts.allow)
    from onnxtax.core.ort_compat import limits_for

    ort_limits = limits_for(opts.target_ort) if opts.target_ort else None
    if onnx_path is None:
        return _lint_source_only(source, inputs, allow_entries, fail_on, say, start)
    meter = StageMeter("lint-ops")
    artifact = open_artifact(onnx_path, tolerate_manifest=True)
    path, model, manifest = artifact.path, artifact.graph, artifact.manifest
    meter.check(artifact.weights_bytes, "lint",
                extra_factor=_probe_children(providers) * MEMORY_FACTORS["parity-provider"]
                + (MEMORY_FACTORS["lint-source"] if source is not None else 0.0))
    report = LintReport(str(path), fail_on=fail_on, allow=[str(a) for a in allow_entries],
                        targets={"opset": target_opset, "ir_version": target_ir,
                                 "ort": ort_limits.to_dict() if ort_limits else None})
    if artifact.manifest_problem:  # a broken manifest must not stop the lint
        report.notes.append(f"manifest ignored: {artifact.manifest_problem}")
    ctx = LintContext(path, model, manifest=manifest, target_opset=target_opset, target_ir=target_ir,
                      target_ort=ort_limits, ort_max_ir=ort_max_ir_version(), ort_max_opset=ort_max_opset())
    ctx.inferred = _infer(model, ctx)
    say("loading the model in ONNX Runtime")
    # the one whole-model load: the graph read above, its weights read by ORT from the files
    # (inside the .onnx or beside it), once
    weights_dir = path.resolve().parent
    ctx.load_error = load_error(model, weights_dir)
    if ctx.load_error and ctx.ort_max_ir and model.ir_version > ctx.ort_max_ir:
        # ORT stops at the IR version; load a copy at its max IR to see what else it would refuse.
        import onnx

        lowered = onnx.ModelProto()
        lowered.CopyFrom(model)
        lowered.ir_version = ctx.ort_max_ir
        second = load_error(lowered, weights_dir)
        ctx.notes.append("ONNX Runtime refuses the IR version; with the IR version lowered to "
                         f"{ctx.ort_max_ir} it " + ("loads the model" if second is None else
                                                    f"still refuses it: {ort_error_summary(second)[0]}"))
    dist, ver = ort_package()
    report.runtime = {"package": dist, "version": ver, "max_ir_version": ctx.ort_max_ir,
                      "max_opset": ctx.ort_max_opset, "loads_model": ctx.load_error is None,
                      "load_error": ort_error_summary(ctx.load_error)[0] if ctx.load_error else None}
    report.model_info = _model_info(model)

    findings: list[Finding] = []
    say("graph rules")
    findings += rule_ir_version(ctx)
    findings += rule_opset(ctx)
    if ort_limits is not None:
        findings += rule_target_runtime(ctx)
    findings += rule_custom_op(ctx)
    findings += rule_runtime_load(ctx, findings)
    findings += rule_control_flow(ctx)
    findings += rule_float64(ctx)
    findings += rule_baked_shape(ctx)
    report.rules_run = list(GRAPH_RULES) + (["target-runtime"] if ort_limits is not None else [])
    if providers:
        say("provider placement")
        findings += rule_provider_fallback(ctx, list(providers), report)
        report.rules_run.append("provider-fallback")
    if source is not None:
        from onnxtax.lint.source import SOURCE_RULES, lint_source

        say("tracing the PyTorch model (source rules)")
        src = lint_source(source, inputs, manifest=manifest)
        findings += src.findings
        report.source = src.info
        report.rules_run += list(SOURCE_RULES)
    for f in findings:
        f.allowed = any(a.matches(f) for a in allow_entries)
    findings.sort(key=lambda f: (list(RULES).index(f.rule), -SEVERITY_RANK[f.severity]))
    report.findings = findings
    report.notes += ctx.notes
    report.seconds = time.perf_counter() - start
    report.memory = meter.record()
    return report


def _probe_children(providers) -> int:
    """Non-CPU providers each load the whole model in a child process for their placement."""
    names = [getattr(p, "name", str(p)).split(":")[0].lower() for p in providers or []]
    return sum(1 for n in names if n not in ("cpu", "cpuexecutionprovider"))


def _infer(model, ctx: LintContext):
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as exc:  # noqa: BLE001 - custom ops or >2 GB: rules work without inferred types
        ctx.notes.append(f"shape inference failed ({type(exc).__name__}); value types come from the graph only")
        return None


def _model_info(model) -> dict:
    subgraphs = sum(1 for _, p in iter_graphs(model) if p is not None)
    return {"ir_version": model.ir_version,
            "opsets": {(i.domain or ""): i.version for i in model.opset_import},
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "nodes": sum(1 for _ in iter_nodes(model)), "subgraphs": subgraphs,
            "functions": len(model.functions)}


def _lint_source_only(source: Any, inputs: list[InputSpec] | None, allow_entries: list, fail_on: str, say,
                      start: float) -> LintReport:
    from onnxtax.lint.source import SOURCE_RULES, lint_source

    if not inputs and isinstance(source, str) and source.startswith(("hf:", "st:")):
        from onnxtax.core.hub import derive_hub

        inputs = derive_hub(source).inputs  # derived from the folder
    if source is None or not inputs:
        raise ConfigError("without an .onnx file, lint-ops needs --source and --input",
                          "e.g. onnxtax lint-ops --source model.py:Net --input x:batch,16")
    say("tracing the PyTorch model (source rules)")
    src = lint_source(source, inputs)
    report = LintReport("(no onnx file)", fail_on=fail_on, allow=[str(a) for a in allow_entries],
                        source=src.info, rules_run=list(SOURCE_RULES))
    for f in src.findings:
        f.allowed = any(a.matches(f) for a in allow_entries)
    report.findings = sorted(src.findings, key=lambda f: (list(RULES).index(f.rule), -SEVERITY_RANK[f.severity]))
    report.notes.append("no .onnx file given: only the source rules ran")
    report.seconds = time.perf_counter() - start
    return report
