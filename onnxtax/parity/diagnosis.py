"""Why a provider failed, in words, and only from the evidence: a size fixed at export, a range
torch.export assumed, a provider keeping state between shapes, a provider computing what
another gets right."""

from __future__ import annotations

from onnxtax.core.compare import OutputStats
from onnxtax.parity.report import ProviderResult
from onnxtax.parity.shapes import ShapePlan


def run_error_hint(plan: ShapePlan) -> str:
    if plan.origin != "random" or not plan.sizes:
        return ""
    axes = ", ".join(f"'{k}'" for k in plan.sizes)
    return (f" ({axes} declared dynamic, yet the graph cannot run at {plan.label}: a size was probably fixed at "
            "export, e.g. int(x.shape[0]) or a reshape/expand to a traced size)")


def baked_hint(acc: OutputStats, plan: ShapePlan, export_sizes: dict[str, int]) -> str:
    """Name the dynamic axis whose size the ONNX output does not follow."""
    if acc.onnx_shape is None or acc.source_shape is None or len(acc.onnx_shape) != len(acc.source_shape):
        return ""
    for axis, (got, want) in enumerate(zip(acc.onnx_shape, acc.source_shape)):
        if got == want:
            continue
        syms = [s for s, v in plan.sizes.items() if v == want]
        if not syms:
            continue
        sym = syms[0]
        known = export_sizes.get(sym)
        if known == got:
            return (f" (axis {axis} stays at {got}, the export-time size of '{sym}': the size was baked into the "
                    "graph at export, e.g. int(x.shape[0]) or a reshape traced as a constant)")
        return (f" (axis {axis} is {got} where '{sym}' is {want}: a size was baked into the graph at export, "
                "e.g. int(x.shape[0]) or a reshape traced as a constant)")
    return ""


def fresh_diagnosis(pr: ProviderResult, fresh_notes: list[str]) -> str | None:
    if not fresh_notes:
        return None
    return (f"{pr.request.name} gives wrong results at some shapes only after other shapes ran in the same session "
            "(a new session computes them correctly): a provider bug, not an export problem")


def assumption_diagnosis(pr: ProviderResult, plans: list[ShapePlan], blamed: set[str] | None = None) -> str | None:
    """Every failing shape lies outside a range torch.export assumed, and (`blamed`: the shapes whose failing
    sample passes when brought inside the range, onnxtax.parity.attribution) the range is the cause there."""
    by_label = {p.label: p for p in plans}
    bad = list(dict.fromkeys(c.shape for c in pr.cases if not c.passed and not (c.reason or "").startswith(
        "not compared: constant output")))
    if not bad or not all(by_label[b].assumption for b in bad if b in by_label):
        return None
    if blamed is not None and not all(b in blamed for b in bad):
        return None
    assumptions = ", ".join(dict.fromkeys(by_label[b].assumption or "" for b in bad if b in by_label))
    return (f"fails only outside the range torch.export assumed at export ({assumptions}), at {', '.join(bad)}: "
            "the exported graph is specialised to that range (a shape-dependent branch in forward(), e.g. "
            "`if x.shape[0] > 32`); make the branch shape-independent (torch.cond, torch.where) or keep inputs "
            "inside the range in serving")


def cross_provider_diagnosis(pr: ProviderResult, others: list[ProviderResult]) -> str | None:
    """A provider failing cases another provider passes: the export is right, this provider is not."""
    bad = {(c.shape, c.output) for c in pr.cases if not c.passed}
    for other in others:
        good = {(c.shape, c.output) for c in other.cases if c.passed}
        if bad and bad <= good:
            return (f"{other.label} passes the cases {pr.label} fails, so the exported graph is right there: "
                    f"{pr.request.name} computes them differently from the source (a provider bug or a precision "
                    "it lowers to)")
    return None


def provider_diagnosis(pr: ProviderResult, plans: list[ShapePlan]) -> str | None:
    """When some random shapes pass and others fail, say so; name a size fixed at export only when
    the evidence says the size decides: every sample of every failing shape fails, with shapes that
    do not follow the axis or values far beyond float32 rounding. Otherwise values may decide it
    (a branch on data, rows of a batch), and the pattern is stated without a cause."""
    failed = [c for c in pr.cases if not c.passed]
    bad = list(dict.fromkeys(c.shape for c in failed))
    good = [p.label for p in plans if p.label not in bad and p.origin == "random"]
    if not good or not all(p.origin == "random" for p in plans if p.label in bad):
        return None
    pattern = f"passes at {', '.join(good)} but fails at {', '.join(bad)}"
    stats = [c.stats for c in failed if c.stats is not None and c.stats.samples]
    size_decides = bool(stats) and all(s.failed_samples == s.samples for s in stats)
    if size_decides and any(s.problems or s.max_rel_diff > 1e-2 for s in stats):
        return (f"{pattern}, on every sample: the graph is right only at some sizes of a dynamic axis, so a size "
                "was fixed at export or a shape-dependent branch (e.g. `if x.shape[0] > 1`) was specialised")
    return f"{pattern} ({'every' if size_decides else 'some'} sample(s) of those shapes fail)"
