"""The provider-fallback rule: where ORT really places each node on each requested provider, read
in a child process for providers that can abort the process on a model."""

from __future__ import annotations

from typing import Sequence

from onnxtax.core.child import ChildResult
from onnxtax.core.errors import CheckFailed
from onnxtax.core.providers import (Placement, ProviderRequest, isolated_placement, open_session, ort_error_summary,
                                    placement_of, resolve_providers)
from onnxtax.lint.graph import CONTROL_FLOW_OPS, iter_nodes
from onnxtax.lint.findings import Finding, LintReport
from onnxtax.lint.rules import LintContext, finding, touches_double


def rule_provider_fallback(ctx: LintContext, providers: Sequence[str | ProviderRequest],
                           report: LintReport) -> list[Finding]:
    out: list[Finding] = []
    usable, skipped = resolve_providers(providers, skip_unavailable=True)
    for req in skipped:
        report.providers["not_checked"].append(req.label)
        out.append(finding("provider-fallback", f"{req.label}: not checked here ({req.name} is not available on "
                            f"this host); placement is never guessed", severity="info",
                            hint="run lint-ops on a host with that provider (or in CI there)",
                            provider=req.name, checked=False))
    nodes_by_name = {r.node.name: r for r in iter_nodes(ctx.model) if r.node.name}
    for req in usable:
        placement, refused, ended = _placement(ctx, req)
        if ended is not None:
            report.providers["checked"].append({"provider": req.name, "label": req.label, "placement": None,
                                                "error": ended.message})
            out.append(_ended_finding(req, ended))
            continue
        if refused is not None:
            report.providers["checked"].append({"provider": req.name, "label": req.label, "placement": None,
                                                "error": refused})
            flow = sorted({r.node.op_type for r in iter_nodes(ctx.model)
                           if r.node.op_type in CONTROL_FLOW_OPS and r.node.domain in ("", "ai.onnx")})
            if ctx.load_error is not None:
                hint = "the CPU provider refuses the model too: fix the findings above first"
            elif flow:
                hint = (f"the CPU provider loads it, so {req.short} refuses something in the model; it has "
                        f"{'/'.join(flow)} (see control-flow), which providers often cannot take: compute both sides "
                        f"and select with torch.where instead of torch.cond, or serve on a provider that loads it")
            else:
                hint = (f"the CPU provider loads it, so {req.short} refuses something in the model: check the "
                        f"provider options, rewrite the op the message names, or serve on a provider that loads it")
            named = ort_error_summary(refused)[1]
            ref = nodes_by_name.get(named) if named else None
            out.append(finding("provider-fallback", f"{req.label} cannot load the model: {refused}", ref,
                                severity="error", hint=hint, provider=req.name, checked=True))
            continue
        report.providers["checked"].append({"provider": req.name, "label": req.label,
                                            "placement": placement.to_dict()})
        if placement.method != "ort-graph-assignment":
            out.append(finding("provider-fallback", f"{req.label}: this ONNX Runtime build does not report node "
                                f"placement; fallback not checked", severity="info", provider=req.name,
                                checked=False))
            continue
        if placement.total_nodes and placement.on_provider == 0 and req.name != "CPUExecutionProvider":
            out.append(finding("provider-fallback", f"{req.label} runs none of the {placement.total_nodes} nodes: "
                                f"everything runs on {', '.join(placement.by_provider)}", severity="error",
                                hint="check the provider options (e.g. device_type) and that the device exists; "
                                     "OpenVINO with an absent GPU/NPU silently runs everything on CPU",
                                provider=req.name, checked=True, by_provider=placement.by_provider))
        for fb in placement.fallback_nodes:
            ref = nodes_by_name.get(fb["name"])
            cause = ""
            if ref is not None and touches_double(ref, ctx):
                cause = " (float64)"
            f = finding("provider-fallback", f"{fb['op_type']} {fb['name']} runs on {fb['provider']} instead of "
                         f"{req.short}{cause}", ref,
                         hint=("cast to float32 in PyTorch before export" if cause else
                               f"{req.short} ran no node at all (see the finding above)" if placement.on_provider == 0
                               else f"{req.short} has no kernel for this op/type here: rewrite it with ops the "
                                    f"provider supports, or accept the CPU copy"),
                         node=None if ref else fb["name"], provider=req.name, ran_on=fb["provider"], checked=True)
            if ref is None:
                f.op_type = fb["op_type"]
            out.append(f)
    return out


def _placement(ctx: LintContext, req: ProviderRequest) -> tuple[Placement | None, str | None, ChildResult | None]:
    """(placement, the provider's refusal, how a child that gave no answer ended). The CPU
    provider is read in this process, from the graph already read (its weights from the file,
    no pre-packing: placement does not depend on it); any other in a child, as a provider can
    abort the process (ORT-OpenVINO on an If inside a Loop) or hang on a model."""
    path = ctx.path
    if req.name == "CPUExecutionProvider":
        try:
            session = open_session(path, req, model_bytes=ctx.model.SerializeToString(), prepack=False)
            return placement_of(session, req.name), None, None
        except CheckFailed as exc:
            return None, exc.message, None
    run = isolated_placement(path, req)
    if run:
        return Placement.from_dict(run.value), None, None
    if run.status == "error":
        return None, run.message if run.error_type == "CheckFailed" else f"{run.error_type}: {run.message}", None
    return None, None, run


def _ended_finding(req: ProviderRequest, run: ChildResult) -> Finding:
    """A provider that killed (or hung) the process loading the model."""
    if run.status == "timeout":
        return finding("provider-fallback", f"{req.label} did not finish loading the model: {run.message}",
                        severity="error", provider=req.name, checked=True, timed_out=True,
                        hint=f"a program that loads this model on {req.short} may hang the same way: check the "
                             f"provider options, try a smaller model part to find the construct, or serve on a "
                             f"provider that loads the model")
    how = f"signal {run.signal}" if run.signal else f"exit code {run.exit_code}"
    detail = ort_error_summary(run.stderr_tail)[0] if run.stderr_tail else ""
    return finding("provider-fallback", f"{req.label} crashed the process loading the model: {how}"
                    + (f": {detail[:300]}" if detail else ""), severity="error", provider=req.name, checked=True,
                    crashed=True,
                    hint=f"any program that loads this model on {req.short} dies the same way: find the construct "
                         f"it cannot take (control-flow findings are the usual cause) and remove it, or serve on a "
                         f"provider that loads the model")
