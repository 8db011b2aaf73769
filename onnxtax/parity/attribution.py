"""Is a failure just outside a range torch.export assumed caused by that range?

A shape outside an assumed range (`seq >= 2` tested at seq=1) fails for one of two reasons: the
graph is specialised to the range, or the inputs there would fail at any size (a fully masked
row fails at seq=1 and at seq=7 alike). Only the first is the range's fault. So the failing sample
is brought inside the range, keeping its values: cut along the axis when it is above the range
(its first `max` entries), repeated along it when below (entry i of the new axis is entry i mod n
of the old one), and run on the same session. The failure is blamed on the range only when that
passes; when it fails too, the range is named and cleared; when it cannot be run, nothing is
blamed and the reason says it was not checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np


@dataclass
class RangeCheck:
    """The verdict on one provider x shape: "range" (inside it the same sample passes), "not-range"
    (inside it, it fails too) or "unchecked" (`detail` says why)."""

    verdict: str
    inside: str  # the in-range sizes, e.g. "batch=1,seq=2"
    how: str  # "repeated along seq to seq=2"
    detail: str = ""

    def prefix(self, plan: Any) -> str:
        """The words that open the case's reason."""
        if self.verdict == "range":
            return (f"outside the range torch.export assumed at export ({plan.assumption}), and the same sample "
                    f"{self.how}, inside it, passes: ")
        if self.verdict == "not-range":
            return (f"{plan.label} lies outside the range torch.export assumed at export ({plan.assumption}), yet the "
                    f"same sample {self.how}, inside it, fails too ({self.detail}), so the range is not the cause: ")
        return unchecked_prefix(plan, self.detail)


def unchecked_prefix(plan: Any, why: str = "") -> str:
    return (f"{plan.label} lies outside the range torch.export assumed at export ({plan.assumption}); whether the "
            f"same inputs pass inside it was not checked{f' ({why})' if why else ''}: ")


def targets_inside(sizes: dict[str, int], assumed: dict[str, dict]) -> dict[str, int]:
    """The nearest in-range size of each axis outside its assumed range."""
    out = {}
    for sym, bounds in assumed.items():
        v = sizes.get(sym)
        if v is None:
            continue
        if bounds.get("max") is not None and v > bounds["max"]:
            out[sym] = int(bounds["max"])
        elif bounds.get("min") is not None and v < bounds["min"]:
            out[sym] = int(bounds["min"])
    return out


def bring_inside(arrays: dict[str, np.ndarray], specs: Sequence[Any], targets: dict[str, int]) -> dict[str, np.ndarray]:
    """The same sample at the in-range sizes: cut along an axis above its range, repeated (i mod n) below."""
    out = {}
    for spec in specs:
        arr = arrays[spec.name]
        for axis, dim in enumerate(spec.dims):
            if isinstance(dim, str) and dim in targets and arr.shape[axis] != targets[dim]:
                arr = np.take(arr, np.arange(targets[dim]) % arr.shape[axis], axis=axis)
        out[spec.name] = np.ascontiguousarray(arr)
    return out


def check_assumed(comparison: Any, plans: Sequence[Any], assumed: dict[str, dict], specs: Sequence[Any],
                  sample_of: Callable[[Any, int], dict], source: Any, feeds_of: Callable[[dict], dict],
                  ) -> dict[tuple[int, int], RangeCheck]:
    """A RangeCheck for each failing (provider, shape) that lies outside an assumed range, run on the
    provider's live session with the failing sample brought inside the range."""
    from onnxtax.core.errors import InputSpecError
    from onnxtax.core.providers import ort_error_summary

    checks: dict[tuple[int, int], RangeCheck] = {}
    for si, live in enumerate(comparison.live):
        for pi, k in comparison.failing_shapes(si, len(plans)):
            plan = plans[pi]
            targets = targets_inside(plan.sizes, assumed) if plan.assumption else {}
            if not targets:
                continue
            sizes = {**plan.sizes, **targets}
            label = ",".join(f"{s}={v}" for s, v in sizes.items())
            how = ", ".join(f"{'cut' if v < plan.sizes[s] else 'repeated'} along {s} to {s}={v}"
                            for s, v in targets.items())
            inside = bring_inside(sample_of(plan, k), specs, targets)
            try:
                expected = source(inside, f"{label} (sample {k} of {plan.label} brought inside the assumed range)")
            except InputSpecError as exc:
                checks[(si, pi)] = RangeCheck("unchecked", label, how, f"the source model fails at {label}: "
                                                                       f"{exc.message[:120]}")
                continue
            try:
                got = live.session.run(None, feeds_of(inside))
            except Exception as exc:  # noqa: BLE001 - ORT raises its own pybind types
                checks[(si, pi)] = RangeCheck("not-range", label, how,
                                              f"ONNX Runtime fails there too: {ort_error_summary(exc)[0][:120]}")
                continue
            failed = []
            for name, a, b in zip(comparison.output_names, got, expected):
                stats = comparison.rule.stats(name, b)
                if not stats.update(a, b):
                    failed.append(f"{name}: {stats.outside} of {stats.elements} elements outside")
            checks[(si, pi)] = (RangeCheck("not-range", label, how, "; ".join(failed)) if failed
                                else RangeCheck("range", label, how))
    return checks


__all__ = ["RangeCheck", "check_assumed", "bring_inside", "targets_inside", "unchecked_prefix"]
