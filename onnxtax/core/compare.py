"""The one comparison criterion: export's smoke run, `parity`, `ci` and the library API
judge an ONNX output against the eager source's with the code below.

A pass must mean "compared and matched", so every part of the criterion can fail:
- Element test |a-b| <= max(atol, k*noise)*scale + max(rtol, k*noise)*|b|, where `scale` is
  the RMS of the source output (at this shape, over its samples) and `noise` the model's own
  rounding noise relative to that RMS (onnxtax.core.noise: the eager model against itself in
  float64). An absolute tolerance alone swallows outputs of magnitude 1e-9 (a random-init
  classifier head): any other model of the same shape passes. Scaled, the tolerance follows
  the output, as FP32 drift does; the noise term follows the model's width, depth and dtype
  (an 8192-wide layer or a float16 model rounds more than atol allows), and is 0 for a model
  whose arithmetic is exact. `k` (noise_factor) was chosen by benchmarks/parity_headroom.py.
- Similarity gate: the cosine between the ONNX and source output (finite elements, per
  sample) must reach `min_cosine`. It catches a wrong output that loose tolerances let through.
- Constant outputs: an output that is the same for every input (all zeros, a buffer) at
  every shape is "not compared": no difference in the graph could show in it. `Constancy`
  tracks it from the source alone; parity fails such an output unless it is allowed.
Integer and bool outputs are compared exactly unless a tolerance names them, unscaled.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from onnxtax.core.defaults import PARITY_ATOL as DEFAULT_ATOL
from onnxtax.core.defaults import PARITY_MIN_COSINE as DEFAULT_MIN_COSINE
from onnxtax.core.defaults import PARITY_NOISE_CAP as NOISE_CAP
from onnxtax.core.defaults import PARITY_NOISE_FACTOR as DEFAULT_NOISE_FACTOR
from onnxtax.core.defaults import PARITY_NOISE_FACTOR_HALF as DEFAULT_NOISE_FACTOR_HALF
from onnxtax.core.defaults import PARITY_RTOL as DEFAULT_RTOL

# Relative differences up to this are float32 rounding (a few ulps accumulated over a graph), never a cause.
_ROUNDING_REL = 1e-5


@dataclass
class Worst:
    """The element furthest outside tolerance (or the largest difference when all pass)."""

    index: tuple[int, ...]
    sample: int
    onnx: float
    source: float
    abs_diff: float
    tolerance_ratio: float

    def to_dict(self) -> dict:
        return {"index": list(self.index), "sample": self.sample, "onnx": self.onnx, "source": self.source,
                "abs_diff": self.abs_diff, "tolerance_ratio": self.tolerance_ratio}


# Elements per block when a large array is reduced: float64 temporaries of a whole 256 MB weight
# would be several GB; per block of rows they stay at a few MB. Arrays up to this size are
# reduced in one piece, exactly as before.
BLOCK_ELEMENTS = 1 << 20


def row_blocks(*arrays: Any, elements: int = BLOCK_ELEMENTS) -> Any:
    """Aligned slices along axis 0 of same-shaped arrays, about `elements` each (0-d arrays whole)."""
    first = arrays[0]
    if first.ndim == 0 or first.size <= elements:
        yield arrays
        return
    rows = max(1, elements // max(1, first.size // first.shape[0]))
    for i in range(0, first.shape[0], rows):
        yield tuple(a[i:i + rows] for a in arrays)


def element_test(a: np.ndarray, b: np.ndarray, rtol: float, atol: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The element test, on float64 arrays of the ONNX (`a`) and source (`b`) values, `atol`
    already scaled: (|a-b| where both are finite else 0, the limit atol + rtol*|b|, finite on both
    sides, NaN/Inf on one side only or different infinities, outside the test). Every comparison
    (parity, localisation, the smoke run, the runtime matrix) decides an element here."""
    finite = np.isfinite(a) & np.isfinite(b)
    same_special = (np.isnan(a) & np.isnan(b)) | (np.isinf(a) & np.isinf(b) & (a == b))
    special = ~finite & ~same_special
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf at positions `finite` excludes
        diff = np.where(finite, np.abs(a - b), 0.0)
    limit = atol + rtol * np.where(finite, np.abs(b), 0.0)
    return diff, limit, finite, special, (finite & (diff > limit)) | special


def tolerance_ratios(diff: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """|a-b| / limit per element (a zero limit: 0 where equal, inf where not)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(limit > 0, diff / np.where(limit > 0, limit, 1.0), np.where(diff > 0, np.inf, 0.0))


def rms(arrays: Sequence[Any]) -> float:
    """Root mean square over the finite elements of float arrays (0.0 when there are none)."""
    total, count = 0.0, 0
    for arr in arrays:
        arr = np.asarray(arr)
        if arr.dtype.kind not in "fc" or arr.size == 0:
            continue
        for (block,) in row_blocks(arr):
            a = block.astype(np.float64, copy=False)
            finite = a[np.isfinite(a)]
            total += float(np.dot(finite.ravel(), finite.ravel()))
            count += int(finite.size)
    return math.sqrt(total / count) if count else 0.0


@dataclass
class OutputStats:
    """Running comparison of one output across samples; only numbers are kept, never arrays.

    An element passes when |a-b| <= atol_effective + rtol_effective*|b| (b = source), or when
    both are NaN, or both are the same infinity. For float outputs atol_effective =
    max(atol, noise_term) * scale (the source's RMS, given by the caller or that of each sample)
    and rtol_effective = max(rtol, noise_term), noise_term = min(noise_factor * noise_rel, cap);
    integer outputs use atol and rtol as they are.
    Max abs/rel diff and cosine cover the elements finite on both sides (relative: where the
    source is non-zero); NaN/Inf mismatches are counted apart. A float sample whose cosine is
    below `min_cosine` fails (None: no gate).
    """

    rtol: float
    atol: float
    min_cosine: float | None = None
    noise_rel: float | None = None  # the model's own rounding noise / output RMS (None: not measured)
    noise_factor: float = 0.0
    samples: int = 0
    failed_samples: int = 0
    elements: int = 0
    outside: int = 0
    nan_inf_mismatch: int = 0
    max_abs_diff: float = 0.0
    max_rel_diff: float = 0.0
    cosine_min: float | None = None
    cosine_failed: int = 0
    scale: float | None = None  # RMS of the source output (the largest seen over samples)
    atol_effective: float | None = None  # the smallest atol*scale applied: what the check could detect
    worst: Worst | None = None
    source_shape: tuple[int, ...] | None = None
    onnx_shape: tuple[int, ...] | None = None
    source_dtype: str | None = None
    onnx_dtype: str | None = None
    problems: list[str] = field(default_factory=list)  # shape/dtype mismatches, once each

    @property
    def passed(self) -> bool:
        return self.samples > 0 and self.outside == 0 and self.cosine_failed == 0 and not self.problems

    @property
    def noise_term(self) -> float:
        """k x noise (capped): what the model's own rounding adds to atol and rtol; 0 without noise."""
        if not self.noise_rel or not self.noise_factor or (self.source_dtype or "float")[:5] not in (
                "float", "compl", "bfloa"):
            return 0.0
        return min(self.noise_factor * self.noise_rel, NOISE_CAP)

    @property
    def rtol_effective(self) -> float:
        return max(self.rtol, self.noise_term)

    @property
    def noise_decides(self) -> bool:
        """The noise term, not the fixed floor, sets this output's tolerance."""
        return self.noise_term > self.atol

    def __bool__(self) -> bool:
        return self.passed

    @property
    def outside_pct(self) -> float:
        return 100.0 * self.outside / self.elements if self.elements else 0.0

    def update(self, actual: Any, expected: Any, sample: int = 0, scale: float | None = None) -> bool:
        """Fold one sample in; True if this sample passed. `scale`: the source output's RMS at
        this shape over all its samples (default: this sample's)."""
        actual, expected = np.asarray(actual), np.asarray(expected)
        self.samples += 1
        self.source_shape, self.onnx_shape = tuple(expected.shape), tuple(actual.shape)
        self.source_dtype, self.onnx_dtype = str(expected.dtype), str(actual.dtype)
        ok = True
        if actual.dtype != expected.dtype:
            self._problem(f"dtype {actual.dtype}, source {expected.dtype}")
            ok = False
        if actual.shape != expected.shape:
            self._problem(f"shape {_shape_text(actual.shape)}, source {_shape_text(expected.shape)}")
            self.failed_samples += 1
            return False
        ok = self._values(actual, expected, sample, scale) and ok
        if not ok:
            self.failed_samples += 1
        return ok

    def _problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)

    def _effective_atol(self, expected: np.ndarray, scale: float | None) -> float:
        if expected.dtype.kind not in "fc":
            return self.atol
        s = rms([expected]) if scale is None else scale
        self.scale = s if self.scale is None else max(self.scale, s)
        eff = max(self.atol, self.noise_term) * s
        self.atol_effective = eff if self.atol_effective is None else min(self.atol_effective, eff)
        return eff

    def _values(self, actual: np.ndarray, expected: np.ndarray, sample: int, scale: float | None) -> bool:
        n = int(expected.size)
        self.elements += n
        if n == 0:
            return True
        atol = self._effective_atol(expected, scale)
        if actual.dtype == np.bool_ or expected.dtype == np.bool_:
            a, b = actual.astype(np.float64), expected.astype(np.float64)
        else:
            a, b = actual.astype(np.float64, copy=False), expected.astype(np.float64, copy=False)
        floats = actual.dtype.kind in "fc" or expected.dtype.kind in "fc"
        rtol = self.rtol_effective if expected.dtype.kind in "fc" else self.rtol
        diff, limit, finite, special_mismatch, outside = element_test(a, b, rtol, atol)
        abs_b = np.where(finite, np.abs(b), 0.0)
        n_out = int(np.count_nonzero(outside))
        n_special = int(np.count_nonzero(special_mismatch))
        self.outside += n_out
        self.nan_inf_mismatch += n_special
        if finite.any():
            self.max_abs_diff = max(self.max_abs_diff, float(diff.max()))
            nonzero = finite & (abs_b > 0)
            if nonzero.any():
                self.max_rel_diff = max(self.max_rel_diff, float((diff[nonzero] / abs_b[nonzero]).max()))
        if n_special:
            flat = int(np.flatnonzero(special_mismatch.ravel())[0])
            ratio = math.inf
        else:
            ratios = tolerance_ratios(diff, limit)
            flat = int(np.argmax(ratios))
            ratio = float(ratios.ravel()[flat])
        if self.worst is None or ratio > self.worst.tolerance_ratio:
            idx = tuple(int(i) for i in np.unravel_index(flat, expected.shape))
            # diff already holds 0 where both sides are the same NaN/Inf; a special mismatch is infinite
            worst_diff = math.inf if n_special else float(diff.ravel()[flat])
            self.worst = Worst(idx, sample, float(a.ravel()[flat]), float(b.ravel()[flat]), worst_diff, ratio)
        cos_ok = True
        if floats:
            av, bv = a[finite], b[finite]
            na, nb = float(np.linalg.norm(av)), float(np.linalg.norm(bv))
            if na == 0 and nb == 0:
                cos = 1.0
            elif na == 0 or nb == 0:
                cos = 0.0
            else:
                cos = float(np.dot(av.ravel(), bv.ravel()) / (na * nb))
            self.cosine_min = cos if self.cosine_min is None else min(self.cosine_min, cos)
            if self.min_cosine is not None and cos < self.min_cosine:
                self.cosine_failed += 1
                cos_ok = False
        return n_out == 0 and cos_ok

    @property
    def detectable(self) -> str:
        """What difference this check could detect, in words (the table's and JUnit's text)."""
        if self.atol_effective is None:
            return f"|a-b| > {self.atol:g} + {self.rtol:g}*|b|"
        return (f"|a-b| > {self.atol_effective:.3g} + {self.rtol_effective:.3g}*|b| (rms {self.scale:.3g}"
                + (f", noise {self.noise_rel:.2g})" if self.noise_rel is not None else ")"))

    def tolerance_text(self) -> str:
        """How this output's atol was set, in words: the fixed floor or the model's noise."""
        if self.atol_effective is None or self.scale is None:
            return f"atol {self.atol:g}"
        if self.noise_decides:
            capped = " (capped)" if self.noise_term >= NOISE_CAP else ""
            return (f"{self.noise_factor:g} x the model's own noise {self.noise_rel:.2g}{capped} x output rms "
                    f"{self.scale:.3g}")
        return f"atol {self.atol:g} x output rms {self.scale:.3g}"

    def failure_reason(self) -> str | None:
        if self.passed:
            return None
        if self.samples == 0:
            return "not run"
        parts = list(self.problems)
        if self.outside:
            atol_text = (f"{self.atol_effective:.3g}" if self.atol_effective is not None else f"{self.atol:g}")
            text = (f"{self.outside} of {self.elements} elements ({format_pct(self.outside_pct)}) outside "
                    f"|a-b| <= {atol_text} + {self.rtol_effective:.3g}*|b|")
            if self.atol_effective is not None and self.scale is not None:
                text += f" ({self.tolerance_text()})"
            if self.nan_inf_mismatch:
                text += f", {self.nan_inf_mismatch} with NaN/Inf at different positions"
            w = self.worst
            if w is not None:
                text += (f"; worst at {list(w.index)} (sample {w.sample}): onnx {format_value(w.onnx)} vs source "
                         f"{format_value(w.source)}")
                if math.isfinite(w.abs_diff):
                    text += f" (diff {w.abs_diff:.3g})"
            parts.append(text)
        if self.cosine_failed and self.cosine_min is not None and self.min_cosine is not None:
            parts.append(f"cosine similarity {self.cosine_min:.4g} < {self.min_cosine:g} on {self.cosine_failed} "
                         f"of {self.samples} samples: the output points elsewhere than the source's")
        if self.outside and not self.nan_inf_mismatch and self.max_rel_diff <= _ROUNDING_REL and not self.noise_rel:
            # evidence, not a guess: differences this small are float32 arithmetic, whatever the graph
            parts.append(f"the differences are at float32 rounding level (max relative {self.max_rel_diff:.2g}): "
                         "the tolerance is tighter than float32 arithmetic allows")
        elif 0 < self.failed_samples < self.samples and not self.problems:
            parts.append(f"fails on {self.failed_samples} of {self.samples} samples at this shape: the difference "
                         "depends on the input values")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {"rtol": self.rtol, "atol": self.atol, "scale": self.scale, "atol_effective": self.atol_effective,
                "rtol_effective": self.rtol_effective, "noise_rel": self.noise_rel, "noise_factor": self.noise_factor,
                "noise_decides": self.noise_decides, "min_cosine": self.min_cosine, "samples": self.samples,
                "failed_samples": self.failed_samples, "elements": self.elements,
                "source_shape": list(self.source_shape) if self.source_shape is not None else None,
                "onnx_shape": list(self.onnx_shape) if self.onnx_shape is not None else None,
                "source_dtype": self.source_dtype, "onnx_dtype": self.onnx_dtype,
                "max_abs_diff": self.max_abs_diff, "max_rel_diff": self.max_rel_diff,
                "outside": self.outside, "outside_pct": self.outside_pct,
                "nan_inf_mismatch": self.nan_inf_mismatch, "cosine_min": self.cosine_min,
                "cosine_failed": self.cosine_failed,
                "worst": self.worst.to_dict() if self.worst else None}


HALF_DTYPES = ("float16", "bfloat16")


def noise_factor_for(dtype: str | None, given: float | None) -> float:
    """k for an output the model computes in `dtype` (a torch or numpy dtype name): the given
    one, else 64 for float32/64 and 12 for float16/bfloat16 (onnxtax.core.defaults says why)."""
    if given is not None:
        return float(given)
    name = str(dtype or "").replace("torch.", "")
    return DEFAULT_NOISE_FACTOR_HALF if name in HALF_DTYPES else DEFAULT_NOISE_FACTOR


@dataclass
class ToleranceRule:
    """How each output of one comparison passes: the fixed floors, the per-output overrides
    (`--tolerance NAME=RTOL:ATOL`: exactly that, no noise term), the cosine gate, and the model's
    measured noise per output name (filled by the caller from onnxtax.core.noise)."""

    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    min_cosine: float | None = DEFAULT_MIN_COSINE
    noise_factor: float | None = None  # None: by the dtype each output is computed in (noise_factor_for)
    per_output: dict[str, tuple[float, float]] = field(default_factory=dict)
    noise: dict[str, float | None] = field(default_factory=dict)  # output name -> noise / output RMS
    noise_note: str | None = None  # why the noise is not known, when it is not
    dtypes: dict[str, str] = field(default_factory=dict)  # output name -> the dtype the model computes it in

    @property
    def uses_noise(self) -> bool:
        return self.noise_factor is None or self.noise_factor > 0

    def factor(self, name: str) -> float:
        return noise_factor_for(self.dtypes.get(name), self.noise_factor)

    def stats(self, name: str, expected: Any) -> OutputStats:
        """A fresh OutputStats for output `name`, whose source values look like `expected`."""
        if name in self.per_output:
            return OutputStats(*self.per_output[name], self.min_cosine)
        if np.asarray(expected).dtype.kind not in "fc":
            return OutputStats(0.0, 0.0, self.min_cosine)  # integers and bools: exact
        return OutputStats(self.rtol, self.atol, self.min_cosine, noise_rel=self.noise.get(name),
                           noise_factor=self.factor(name))

    @property
    def k_text(self) -> str:
        if self.noise_factor is not None:
            return f"{self.noise_factor:g}"
        return f"{DEFAULT_NOISE_FACTOR:g} (float16/bfloat16: {DEFAULT_NOISE_FACTOR_HALF:g})"

    @property
    def text(self) -> str:
        """The rule in one line, for reports."""
        if not self.uses_noise:
            return f"|a-b| <= {self.atol:g} x rms + {self.rtol:g} x |b| (fixed: --noise-factor 0)"
        return (f"|a-b| <= max({self.atol:g}, k x noise) x rms + max({self.rtol:g}, k x noise) x |b|, k = "
                f"{self.k_text}, noise = the model's own rounding (eager against itself in float64) relative to "
                f"the output's rms, k x noise capped at {NOISE_CAP:g}")

    def to_dict(self) -> dict:
        return {"rtol": self.rtol, "atol": self.atol, "min_cosine": self.min_cosine,
                "noise_factor": self.noise_factor, "noise_cap": NOISE_CAP, "dtypes": dict(self.dtypes),
                "per_output": {k: list(v) for k, v in self.per_output.items()}, "noise": dict(self.noise),
                "noise_note": self.noise_note, "text": self.text}


def compare_arrays(actual: Any, expected: Any, rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL, *,
                   scale: float | None = None, min_cosine: float | None = DEFAULT_MIN_COSINE,
                   noise_rel: float | None = None, noise_factor: float | None = None) -> OutputStats:
    """Compare one ONNX output (`actual`) with the source's (`expected`); truthy if it passes."""
    stats = OutputStats(rtol, atol, min_cosine, noise_rel=noise_rel,
                        noise_factor=noise_factor_for(np.asarray(expected).dtype.name, noise_factor))
    stats.update(actual, expected, scale=scale)
    return stats


class Constancy:
    """Does the source output vary with the input? Fed every source sample of one output,
    keyed by shape; keeps digests and one value, never arrays.

    Constant means: at every shape with two or more samples, all samples are identical
    (input-independent), or every element of every sample is one and the same value
    (all zeros). A check on such an output cannot fail for a wrong graph that returns
    the same constant."""

    def __init__(self) -> None:
        self._digest: dict[str, str] = {}
        self._samples: dict[str, int] = {}
        self.varies_across_samples = False
        self._uniform_value: float | None = None
        self.uniform = True
        self.elements = 0

    def add(self, shape_key: str, arr: Any) -> None:
        arr = np.ascontiguousarray(np.asarray(arr))
        digest = hashlib.sha1(arr.tobytes() + str(arr.shape).encode() + str(arr.dtype).encode()).hexdigest()
        first = self._digest.setdefault(shape_key, digest)
        self._samples[shape_key] = self._samples.get(shape_key, 0) + 1
        if first != digest:
            self.varies_across_samples = True
        self.elements += int(arr.size)
        if self.uniform and arr.size:
            flat = arr.ravel()
            lo, hi = flat.min(), flat.max()
            same = bool(lo == hi) or (arr.dtype.kind in "fc" and bool(np.isnan(flat).all()))
            value = float(flat[0]) if same else None
            if not same or (self._uniform_value is not None and value != self._uniform_value
                            and not (math.isnan(value) and math.isnan(self._uniform_value))):
                self.uniform = False
            else:
                self._uniform_value = value

    @property
    def constant(self) -> bool:
        if self.uniform and self.elements >= 2:
            return True
        repeated = any(n >= 2 for n in self._samples.values())
        return repeated and not self.varies_across_samples

    def describe(self) -> str:
        """Why the output counts as constant, for the verdict."""
        if self.uniform and self.elements >= 2 and self._uniform_value is not None:
            return f"every element is {self._uniform_value:g} at every shape and sample"
        return "identical for every sample at each shape (it does not depend on the input values)"


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def format_value(v: float) -> str:
    return f"{v:.6g}"


def format_pct(p: float) -> str:
    return f"{p:.3g}%"
