"""One value compared, eager against ONNX, on parity's element test: the unit every localisation
claim is made of. A claim ("its inputs agree", "its output departs") is printed only from a
`Point` that was computed; a value that could not be paired is an `InputCheck` with no verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Point:
    """One module's (or op's) output compared: eager vs ONNX, on parity's tolerance."""

    module: str
    class_name: str
    value: str | None
    max_abs_diff: float = 0.0
    max_rel_diff: float = 0.0
    tolerance_ratio: float = 0.0
    outside: int = 0
    elements: int = 0
    problem: str | None = None

    @property
    def diverges(self) -> bool:
        return self.problem is not None or self.tolerance_ratio > 1

    def to_dict(self) -> dict:
        return {"module": self.module, "class_name": self.class_name, "value": self.value,
                "max_abs_diff": self.max_abs_diff, "max_rel_diff": self.max_rel_diff,
                "tolerance_ratio": self.tolerance_ratio, "outside": self.outside, "elements": self.elements,
                "problem": self.problem}

    def text(self) -> str:
        if self.problem:
            return f"{self.module or 'output'}: {self.problem}"
        return f"{self.module or 'output'} {self.max_abs_diff:.3g} ({self.tolerance_ratio:.3g}x tolerance)"


@dataclass
class InputCheck:
    """One input of a module or op: the ONNX value it was paired with and the comparison, or why
    it was not compared (`agree` None: no claim can be made about it)."""

    eager: str  # "input 0", "attn_mask", "args[1]"
    onnx: str | None  # the ONNX value compared with, None when none could be paired
    shape: list[int]
    agree: bool | None = None
    max_abs_diff: float | None = None
    tolerance_ratio: float | None = None
    how: str = "same shape"  # or "same elements in C order" (the graph reshaped it), or why not compared

    def to_dict(self) -> dict:
        return {"eager": self.eager, "onnx": self.onnx, "shape": list(self.shape), "agree": self.agree,
                "max_abs_diff": self.max_abs_diff, "tolerance_ratio": self.tolerance_ratio, "how": self.how}

    def text(self) -> str:
        if self.agree is None:
            return f"{self.eager}: not compared ({self.how})"
        verdict = "agrees" if self.agree else "differs"
        return f"{self.eager} {verdict} with {self.onnx} (max diff {self.max_abs_diff:.3g})"


def inputs_text(checks: list[InputCheck]) -> str:
    """What the comparisons of some inputs show, and nothing more: 'its 4 inputs agree with eager's
    within tolerance' only when every one was compared and agreed."""
    compared = [c for c in checks if c.agree is not None]
    differ = [c for c in compared if not c.agree]
    missing = [c for c in checks if c.agree is None]
    if not checks:
        return "it reads no input-dependent value"
    if differ:
        worst = max(differ, key=lambda c: c.max_abs_diff or 0.0)
        count = (f"its {len(checks)} input(s)" if len(differ) == len(checks)
                 else f"{len(differ)} of its {len(checks)} inputs")
        return (f"{count} differ from eager's (worst: {worst.eager} vs {worst.onnx}, max diff "
                f"{worst.max_abs_diff:.3g})")
    if missing:
        return (f"{len(compared)} of its {len(checks)} inputs agree with eager's within tolerance; "
                + "; ".join(c.text() for c in missing[:3]))
    return f"its {len(checks)} input(s) agree with eager's within tolerance (each compared)"


def compare_point(module: str, class_name: str, value: str | None, onnx: np.ndarray, eager: np.ndarray,
                  rtol: float, atol: float, scale: float | None = None) -> tuple[Point, np.ndarray | None]:
    """The point and its mask of elements outside parity's element test (onnxtax.core.compare):
    |a-b| <= atol*rms(b) + rtol*|b| for floats, exact for integers; NaN/Inf must match. `scale`
    replaces rms(b) (parity scales by the output's RMS over every sample of the shape)."""
    from onnxtax.core.compare import element_test, rms, row_blocks, tolerance_ratios

    point = Point(module, class_name, value)
    if onnx.shape != eager.shape:
        point.problem = f"shape {list(onnx.shape)} vs source {list(eager.shape)}"
        point.tolerance_ratio = math.inf
        return point, None
    point.elements = int(eager.size)
    if not eager.size:
        return point, np.zeros(eager.shape, bool)
    exact = eager.dtype.kind not in "fc"
    r, t = (0.0, 0.0) if exact else (rtol, atol * (rms([eager]) if scale is None else scale))
    mask = np.zeros(eager.shape, bool)
    special = False  # a NaN/Inf on one side only
    # block by block: the float64 temporaries of a whole weight would be several times its size
    for onnx_block, eager_block, mask_block in row_blocks(onnx, eager, mask):
        a, b = onnx_block.astype(np.float64), eager_block.astype(np.float64)
        diff, limit, finite, one_sided, outside = element_test(a, b, r, t)  # parity's own element test
        mask_block[...] = outside
        point.outside += int(mask_block.sum())
        point.max_abs_diff = max(point.max_abs_diff, float(diff.max()))
        nz = finite & (b != 0)
        if nz.any():
            point.max_rel_diff = max(point.max_rel_diff, float((diff[nz] / np.abs(b[nz])).max()))
        special = special or bool(one_sided.any())
        if not special:
            point.tolerance_ratio = max(point.tolerance_ratio, float(tolerance_ratios(diff, limit).max()))
    if special:
        point.tolerance_ratio = math.inf
    return point, mask


def same_kind(a: np.ndarray, b: np.ndarray) -> bool:
    """Both floating, both bool, or both integer: values that can stand for each other."""
    def kind(x: np.ndarray) -> str:
        return "f" if x.dtype.kind in "fc" else "b" if x.dtype.kind == "b" else "i"
    return kind(a) == kind(b)


def regrouped(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Whether one shape is the other with adjacent axes merged or split ([2, 3, 4] ~ [6, 4] ~ [2, 12]):
    then the same values in C order are the same tensor reshaped, as ONNX's Reshape and torch's view
    read them."""
    if a == b:
        return True
    if math.prod(a) != math.prod(b):
        return False
    a, b = [d for d in a if d != 1], [d for d in b if d != 1]  # size-1 axes do not move any value

    def refines(fine: list[int], coarse: list[int]) -> bool:
        i = 0
        for d in coarse:  # each coarse axis is the product of a run of fine axes
            p = 1
            while p < d and i < len(fine):
                p *= fine[i]
                i += 1
            if p != d:
                return False
        return i == len(fine)

    return refines(a, b) or refines(b, a)


def best_match(module: str, class_name: str, eager: np.ndarray, candidates: dict[str, np.ndarray], rtol: float,
               atol: float, *, reshaped: bool = False) -> tuple[Point, np.ndarray | None] | None:
    """The ONNX value standing for one eager value: same shape (with `reshaped`, also the same elements
    under adjacent axes merged or split), closest to it. Choosing the closest keeps an unrelated value
    of the same shape from faking a divergence."""
    best = None
    for name, arr in candidates.items():
        if not same_kind(arr, eager):
            continue
        if arr.shape != eager.shape:
            if not (reshaped and regrouped(tuple(arr.shape), tuple(eager.shape))):
                continue
            arr = arr.reshape(eager.shape)
        pm = compare_point(module, class_name, name, arr, eager, rtol, atol)
        if best is None or pm[0].tolerance_ratio < best[0].tolerance_ratio:
            best = pm
    return best
