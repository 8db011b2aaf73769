"""Which input shapes a comparison runs, and the samples at each.

Shapes: every dynamic axis takes 1, an even and an odd size, both different from
its export-time size (1, 4, 7 unless the export size is one of them), or the
`dims` values. Axes are combined as a full cartesian product when it has at most
`max_shapes` (9) combinations, else varied jointly (shape i takes the i-th value
of every axis). When the inputs come from the ONNX graph (no `inputs`, no
manifest), axes are always varied jointly: the dynamo exporter names the same axis
differently on each input (`s72`, `s43`), and a product would feed mismatched sizes.
Each shape runs `samples` seeded random samples (both signs; magnitudes 1, 0.1, 10
in turn; integers by --range or specs.default_domain); each `.npz` data file adds one
real sample at its own shape. Every range torch.export assumed (manifest
"assumed_ranges") adds a shape just outside it (max+1, min-1; capped at
PARITY_ASSUMED_SIZE_CAP). A default size the eager model rejects is adapted
(`_adapt_plan`) and noted.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxtax.core.defaults import PARITY_ASSUMED_SIZE_CAP as ASSUMED_SIZE_CAP
from onnxtax.core.defaults import PARITY_MAX_SHAPES as MAX_SHAPES
from onnxtax.core.manifest import assumed_text
from onnxtax.core.specs import (InputSpec, SampleRecipe, check_dims_known, concrete_shape,
                           export_sizes as default_export_sizes, make_inputs, read_data_file, symbols_of)

# Sizes tried on each dynamic axis besides 1: the first even and the first odd one
# that differ from the export-time size.
_EVEN_SIZES = (4, 6, 8, 10)
_ODD_SIZES = (7, 9, 5, 11)


@dataclass
class ShapePlan:
    """One input shape to test: a combination of dynamic sizes, or one data file."""

    label: str
    sizes: dict[str, int]
    samples: int
    origin: str = "random"  # or "data", or "assumed" (just outside a range torch.export assumed)
    file: str | None = None
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    assumption: str | None = None  # the range torch.export assumed that these sizes lie outside
    source: Any = field(default=None, repr=False, compare=False)  # the data file as given (a TextFile keeps its tokenizer)

    def to_dict(self) -> dict:
        return {"label": self.label, "sizes": dict(self.sizes), "origin": self.origin, "file": self.file,
                "samples": self.samples, "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
                "assumption": self.assumption}


def default_axis_values(export_size: int | None) -> list[int]:
    """1, then the first even and first odd size that differ from the export-time size."""
    avoid = {1, export_size}
    even = next(v for v in _EVEN_SIZES if v not in avoid)
    odd = next(v for v in _ODD_SIZES if v not in avoid)
    return [1, even, odd]


def plan_shapes(specs: list[InputSpec], dims: dict[str, list[int]] | None, export_sizes: dict[str, int],
                *, samples: int, joint: bool = False, max_shapes: int = MAX_SHAPES) -> list[ShapePlan]:
    """The random-sample shapes: every dynamic axis at several sizes (see the module docstring)."""
    dims = dims or {}
    check_dims_known(dims, specs)
    syms = symbols_of(specs)
    assumed = default_export_sizes(specs)
    values = {s: list(dict.fromkeys(dims[s])) if s in dims else
              default_axis_values(export_sizes.get(s, assumed.get(s))) for s in syms}
    if not syms:
        combos: list[dict[str, int]] = [{}]
    elif not joint and math.prod(len(v) for v in values.values()) <= max_shapes:
        combos = [dict(zip(syms, c)) for c in itertools.product(*(values[s] for s in syms))]
    else:
        n = max(len(v) for v in values.values())
        combos = [{s: values[s][i % len(values[s])] for s in syms} for i in range(n)]
    plans = []
    for sizes in combos:
        label = ",".join(f"{k}={v}" for k, v in sizes.items()) or "static"
        plans.append(ShapePlan(label, sizes, samples, "random", None,
                               {s.name: list(concrete_shape(s, sizes)) for s in specs}))
    return plans


def plan_data_file(path: str | Path, specs: list[InputSpec]) -> ShapePlan:
    """One .npz (arrays keyed by input name, one batch), or a text file tokenized by the model's
    tokenizer (onnxtax.core.hub.text), checked against the specs."""
    source, path = path, Path(path)
    _, sizes, shapes = read_data_file(source, specs)
    size_text = ",".join(f"{k}={v}" for k, v in sizes.items())
    label = f"{path.name}" + (f"({size_text})" if size_text else "")
    return ShapePlan(label, sizes, 1, "data", str(path), shapes, source=source)


def plan_assumed(plans: list[ShapePlan], assumed: dict[str, dict], specs: list[InputSpec],
                 export_sizes: dict[str, int], *, samples: int, notes: list[str],
                 cap: int = ASSUMED_SIZE_CAP) -> list[ShapePlan]:
    """Shapes just outside each range torch.export assumed (max+1, min-1), other axes at their
    export-time size. Plans already outside a range are marked with it instead of adding one.
    A size above `cap` is not tested (noted): memory and time stay bounded."""
    base = {**default_export_sizes(specs), **export_sizes}
    extra: list[ShapePlan] = []
    for sym, bounds in assumed.items():
        text = assumed_text(sym, bounds)
        lo, hi = bounds.get("min"), bounds.get("max")
        outside = ([lo - 1] if lo is not None and lo > 1 else []) + ([hi + 1] if hi is not None else [])
        tested = []
        for value in outside:
            already = [p for p in plans + extra if p.sizes.get(sym) == value]
            for p in already:
                p.assumption = p.assumption or text
            if already:
                tested.append(f"{sym}={value}")
                continue
            if value > cap:
                notes.append(f"torch.export assumed {text} at export; {sym}={value} is above the size cap ({cap}), "
                             "so the artifact is not tested outside that range")
                continue
            sizes = {s: (value if s == sym else base.get(s, 3)) for s in base if s in set(symbols_of(specs))}
            label = ",".join(f"{k}={v}" for k, v in sizes.items())
            extra.append(ShapePlan(label, sizes, samples, "assumed", None,
                                   {s.name: list(concrete_shape(s, sizes)) for s in specs}, text))
            tested.append(f"{sym}={value}")
        if tested:
            notes.append(f"torch.export assumed {text} at export: testing {', '.join(tested)}, just outside it")
    return extra


def check_run(samples: int, data_files, opt_level: str, rtol: float, atol: float) -> None:
    """The settings every comparison run (parity, the runtime matrix) takes, checked before any work."""
    from onnxtax.core.defaults import ORT_OPT_LEVELS
    from onnxtax.core.errors import InputSpecError

    if samples < 0 or (samples == 0 and not data_files):
        raise InputSpecError(f"--samples {samples}: need at least one sample", "use --samples 1 or more, or --data")
    if opt_level not in ORT_OPT_LEVELS:
        raise InputSpecError(f"unknown --opt-level '{opt_level}'", f"use one of: {', '.join(ORT_OPT_LEVELS)}")
    if not (math.isfinite(rtol) and math.isfinite(atol)) or rtol < 0 or atol < 0:
        # a NaN bound makes every `diff > bound` false: the gate would pass anything
        raise InputSpecError(f"--rtol {rtol:g} --atol {atol:g}: tolerances must be finite, non-negative numbers",
                             "e.g. --rtol 1e-4 --atol 1e-5")


def sample_inputs(plan: ShapePlan, specs: list[InputSpec], recipe: SampleRecipe, k: int) -> dict:
    """Sample k of a shape: seeded random arrays, or the arrays of its data file."""
    if plan.origin == "data":
        assert plan.file is not None
        return read_data_file(plan.source if plan.source is not None else Path(plan.file), specs)[0]
    return make_inputs(specs, plan.sizes, recipe, k)
