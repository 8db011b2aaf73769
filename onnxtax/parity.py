"""FP32 parity of an ONNX artifact against its eager PyTorch source, on every
configured execution provider, at several sizes of every dynamic axis.

Exit code 0 of `onnxtax parity` means: on these providers, at these shapes, on these
samples, the artifact computes what the source model computes, within tolerance.
The exporter's own checks (onnx.checker, torch's `verify=True`) compare against the
exported program at the example input only; the failures that matter (a size baked
in at export, a data-dependent branch frozen by tracing) show up only at other
shapes and other values, against the eager model.

Defaults, measured here (torch 2.13, ORT 1.31, onnxruntime-openvino 1.24 on CPU) on
MLP, CNN, LSTM/GRU and 2-4 layer Transformer encoders exported by both exporters,
inputs at scales 0.1, 1 and 10: the worst drift needed atol 3.3e-6 at rtol 1e-4
(max abs diff 7.5e-6 on outputs of magnitude 2). A 1e-3 relative change in one
weight moves outputs by about 1e-3 relative. Hence rtol=1e-4, atol=1e-5: about 3x
headroom over real FP32 drift, 10x below a real change. Integer and bool outputs
must match exactly unless a per-output tolerance names them.

Shapes: every dynamic axis takes 1, an even and an odd size, both different from
its export-time size (1, 4, 7 unless the export size is one of them), or the
`dims` values. Axes are combined as a full cartesian product when it has at most
`max_shapes` (9) combinations, else varied jointly (shape i takes the i-th value
of every axis). When the inputs come from the ONNX graph (no `inputs`, no
manifest), axes are always varied jointly: the dynamo exporter names the same axis
differently on each input (`s72`, `s43`), and a product would feed mismatched sizes.
Each shape runs `samples` seeded random samples (both signs; magnitudes 1, 0.1, 10
in turn); each `.npz` data file adds one real sample at its own shape.

JSON schema of `ParityReport.to_dict()` (schema "onnxtax.parity/1"; keys stable):
{
  "schema": "onnxtax.parity/1",
  "passed": true,
  "model": {"spec": "examples/fraud_detector.py:FraudDetector" | null, "class_name": "FraudDetector"},
  "onnx": "fraud.onnx",
  "input_source": "arguments" | "manifest" | "onnx-graph",
  "inputs": [{"name": "x", "dims": ["batch", 128], "dtype": "float32", "onnx_name": "x",
              "range": [0, 10] | null}],
  "export_sizes": {"batch": 3},                      (known export-time sizes only)
  "outputs": [{"name": "prob", "source_path": "[0]"}],   (ONNX name, where it sits in forward()'s result)
  "tolerance": {"rtol": 1e-4, "atol": 1e-5, "per_output": {"logits": {"rtol": 1e-3, "atol": 1e-4}}},
  "seed": 0, "samples_per_shape": 3,
  "shapes": [{"label": "batch=1", "sizes": {"batch": 1}, "origin": "random" | "data", "file": null | "prod.npz",
              "samples": 3, "input_shapes": {"x": [1, 128]}}],
  "providers": [{
      "name": "CPUExecutionProvider", "short": "cpu", "label": "cpu", "options": {},
      "status": "passed" | "failed" | "error" | "skipped",
      "reason": null | "skipped: not available on this host" | "<one line>",
      "session_load_s": 0.01 | null,
      "placement": null | {"provider", "method", "total_nodes", "on_provider", "fallback", "by_provider",
                           "fallback_op_types", "fallback_nodes"},
      "cases": [{"shape": "batch=1", "output": "prob", "status": "passed" | "failed" | "error",
                 "reason": null | "<one line>", "rtol": 1e-4, "atol": 1e-5,
                 "samples": 3, "failed_samples": 0, "elements": 3,
                 "source_shape": [1, 1], "onnx_shape": [1, 1], "source_dtype": "float32", "onnx_dtype": "float32",
                 "max_abs_diff": 5.9e-08, "max_rel_diff": 1.2e-07, "outside": 0, "outside_pct": 0.0,
                 "nan_inf_mismatch": 0, "cosine_min": 1.0 | null,
                 "worst": null | {"index": [0, 0], "sample": 1, "onnx": 0.51, "source": 0.51,
                                  "abs_diff": 5.9e-08, "tolerance_ratio": 0.005},
                 "time_s": 0.0002}]}],
  "failures": ["cpu batch=7 prob: ..."],            (one line each; empty when passed)
  "notes": ["..."],
  "settings": {"fail_on_fallback": false, "opt_level": "all", "threads": null, "max_shapes": 9},
  "versions": {"python": ..., "torch": ..., "onnxruntime": ..., ...},
  "duration_s": 1.23
}
"tolerance_ratio" is |a-b| / (atol + rtol*|b|): above 1 fails; a NaN/Inf mismatch makes it
infinite, written as the string "inf" (JSON has no infinity). Max abs/rel diff and cosine
cover the elements finite on both sides; "nan_inf_mismatch" counts the others. "status"
"error" marks a case ONNX Runtime could not run (or a provider whose session did not load).
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np

from onnxtax.errors import CheckFailed, InputSpecError, OnnxtaxError
from onnxtax.inputs import ResolvedInputs
from onnxtax.progress import Progress
from onnxtax.report import Verdict
from onnxtax.providers import OPT_LEVELS, Placement, ProviderRequest, ort_error_summary
from onnxtax.specs import (DTYPES, InputSpec, SampleRecipe, ValueRange, check_dims_known, concrete_shape,
                           export_sizes as default_export_sizes, make_inputs, symbols_of)
from onnxtax.defaults import OPT_LEVEL, PARITY_SEED
from onnxtax.defaults import PARITY_ATOL as DEFAULT_ATOL
from onnxtax.defaults import PARITY_MAX_SHAPES as MAX_SHAPES
from onnxtax.defaults import PARITY_RTOL as DEFAULT_RTOL
from onnxtax.defaults import PARITY_SAMPLES as DEFAULT_SAMPLES

SCHEMA = "onnxtax.parity/1"
CaseStatus = Literal["passed", "failed", "error"]  # error: ONNX Runtime could not run the case
ProviderStatus = Literal["passed", "failed", "error", "skipped"]  # skipped: not on this host
# Sizes tried on each dynamic axis besides 1: the first even and the first odd one
# that differ from the export-time size.
_EVEN_SIZES = (4, 6, 8, 10)
_ODD_SIZES = (7, 9, 5, 11)


# --------------------------------------------------------------------------- comparison


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


@dataclass
class OutputStats:
    """Running comparison of one output across samples; only numbers are kept, never arrays.

    An element passes when |a-b| <= atol + rtol*|b| (b = source), or when both are NaN,
    or both are the same infinity. Max abs/rel diff and cosine cover the elements finite on
    both sides (relative: where the source is non-zero); NaN/Inf mismatches are counted apart.
    """

    rtol: float
    atol: float
    samples: int = 0
    failed_samples: int = 0
    elements: int = 0
    outside: int = 0
    nan_inf_mismatch: int = 0
    max_abs_diff: float = 0.0
    max_rel_diff: float = 0.0
    cosine_min: float | None = None
    worst: Worst | None = None
    source_shape: tuple[int, ...] | None = None
    onnx_shape: tuple[int, ...] | None = None
    source_dtype: str | None = None
    onnx_dtype: str | None = None
    problems: list[str] = field(default_factory=list)  # shape/dtype mismatches, once each

    @property
    def passed(self) -> bool:
        return self.samples > 0 and self.outside == 0 and not self.problems

    def __bool__(self) -> bool:
        return self.passed

    @property
    def outside_pct(self) -> float:
        return 100.0 * self.outside / self.elements if self.elements else 0.0

    def update(self, actual: Any, expected: Any, sample: int = 0) -> bool:
        """Fold one sample in; True if this sample passed."""
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
        ok = self._values(actual, expected, sample) and ok
        if not ok:
            self.failed_samples += 1
        return ok

    def _problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)

    def _values(self, actual: np.ndarray, expected: np.ndarray, sample: int) -> bool:
        n = int(expected.size)
        self.elements += n
        if n == 0:
            return True
        if actual.dtype == np.bool_ or expected.dtype == np.bool_:
            a, b = actual.astype(np.float64), expected.astype(np.float64)
        else:
            a, b = actual.astype(np.float64, copy=False), expected.astype(np.float64, copy=False)
        floats = actual.dtype.kind in "fc" or expected.dtype.kind in "fc"
        if floats:
            finite = np.isfinite(a) & np.isfinite(b)
            same_special = (np.isnan(a) & np.isnan(b)) | (np.isinf(a) & np.isinf(b) & (a == b))
            special_mismatch = ~finite & ~same_special
        else:
            finite = np.ones(a.shape, dtype=bool)
            special_mismatch = np.zeros(a.shape, dtype=bool)
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf at positions `finite` excludes
            diff = np.where(finite, np.abs(a - b), 0.0)
        abs_b = np.where(finite, np.abs(b), 0.0)
        limit = self.atol + self.rtol * abs_b
        over = finite & (diff > limit)
        outside = over | special_mismatch
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
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios = np.where(limit > 0, diff / np.where(limit > 0, limit, 1.0),
                                  np.where(diff > 0, np.inf, 0.0))
            flat = int(np.argmax(ratios))
            ratio = float(ratios.ravel()[flat])
        if self.worst is None or ratio > self.worst.tolerance_ratio:
            idx = tuple(int(i) for i in np.unravel_index(flat, expected.shape))
            # diff already holds 0 where both sides are the same NaN/Inf; a special mismatch is infinite
            worst_diff = math.inf if n_special else float(diff.ravel()[flat])
            self.worst = Worst(idx, sample, float(a.ravel()[flat]), float(b.ravel()[flat]), worst_diff, ratio)
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
        return n_out == 0

    def failure_reason(self) -> str | None:
        if self.passed:
            return None
        if self.samples == 0:
            return "not run"
        parts = list(self.problems)
        if self.outside:
            text = (f"{self.outside} of {self.elements} elements ({_pct(self.outside_pct)}) outside "
                    f"|a-b| <= {self.atol:g} + {self.rtol:g}*|b|")
            if self.nan_inf_mismatch:
                text += f", {self.nan_inf_mismatch} with NaN/Inf at different positions"
            w = self.worst
            if w is not None:
                text += (f"; worst at {list(w.index)} (sample {w.sample}): onnx {_num(w.onnx)} vs source "
                         f"{_num(w.source)}")
                if math.isfinite(w.abs_diff):
                    text += f" (diff {w.abs_diff:.3g})"
            parts.append(text)
        if 0 < self.failed_samples < self.samples and not self.problems:
            parts.append(f"fails on {self.failed_samples} of {self.samples} samples at this shape: the graph "
                         "diverges only for some input values, typical of a data-dependent Python branch "
                         "(e.g. `if x.mean() > 0`) frozen at export")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {"rtol": self.rtol, "atol": self.atol, "samples": self.samples,
                "failed_samples": self.failed_samples, "elements": self.elements,
                "source_shape": list(self.source_shape) if self.source_shape is not None else None,
                "onnx_shape": list(self.onnx_shape) if self.onnx_shape is not None else None,
                "source_dtype": self.source_dtype, "onnx_dtype": self.onnx_dtype,
                "max_abs_diff": self.max_abs_diff, "max_rel_diff": self.max_rel_diff,
                "outside": self.outside, "outside_pct": self.outside_pct,
                "nan_inf_mismatch": self.nan_inf_mismatch, "cosine_min": self.cosine_min,
                "worst": self.worst.to_dict() if self.worst else None}


def compare_arrays(actual: Any, expected: Any, rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL
                   ) -> OutputStats:
    """Compare one ONNX output (`actual`) with the source's (`expected`); truthy if it passes."""
    stats = OutputStats(rtol, atol)
    stats.update(actual, expected)
    return stats


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _num(v: float) -> str:
    return f"{v:.6g}"


def _pct(p: float) -> str:
    return f"{p:.3g}%"


# --------------------------------------------------------------------------- report


@dataclass
class ShapePlan:
    """One input shape to test: a combination of dynamic sizes, or one data file."""

    label: str
    sizes: dict[str, int]
    samples: int
    origin: str = "random"  # or "data"
    file: str | None = None
    input_shapes: dict[str, list[int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"label": self.label, "sizes": dict(self.sizes), "origin": self.origin, "file": self.file,
                "samples": self.samples, "input_shapes": {k: list(v) for k, v in self.input_shapes.items()}}


@dataclass
class CaseResult:
    """One provider x shape x output."""

    shape: str
    output: str
    status: CaseStatus
    reason: str | None = None
    stats: OutputStats | None = None
    time_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict:
        data = {"shape": self.shape, "output": self.output, "status": self.status, "reason": self.reason}
        stats = self.stats.to_dict() if self.stats is not None else {
            k: None for k in OutputStats(0, 0).to_dict()}
        data.update(stats)
        data["time_s"] = self.time_s
        return data


@dataclass
class ProviderResult:
    request: ProviderRequest
    status: ProviderStatus = "passed"
    reason: str | None = None
    placement: Placement | None = None
    session_load_s: float | None = None
    cases: list[CaseResult] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.request.label

    def to_dict(self) -> dict:
        data = self.request.to_dict()
        data.update({"label": self.label, "status": self.status, "reason": self.reason,
                     "session_load_s": self.session_load_s,
                     "placement": self.placement.to_dict() if self.placement else None,
                     "cases": [c.to_dict() for c in self.cases]})
        return data


@dataclass
class ParityReport(Verdict):
    """The verdict of one `check_parity` run; truthy when every case on every provider passed."""

    onnx: str
    model_spec: str | None
    class_name: str
    input_source: str = "arguments"
    inputs: list[dict] = field(default_factory=list)
    export_sizes: dict[str, int] = field(default_factory=dict)
    outputs: list[dict] = field(default_factory=list)
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    per_output: dict[str, tuple[float, float]] = field(default_factory=dict)
    seed: int = 0
    samples_per_shape: int = DEFAULT_SAMPLES
    shapes: list[ShapePlan] = field(default_factory=list)
    providers: list[ProviderResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    model_failures: list[str] = field(default_factory=list)  # not tied to a provider; also in `failures`
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def cases(self) -> list[CaseResult]:
        return [c for p in self.providers for c in p.cases]

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "passed": self.passed,
            "model": {"spec": self.model_spec, "class_name": self.class_name},
            "onnx": self.onnx,
            "input_source": self.input_source,
            "inputs": list(self.inputs),
            "export_sizes": dict(self.export_sizes),
            "outputs": list(self.outputs),
            "tolerance": {"rtol": self.rtol, "atol": self.atol,
                          "per_output": {k: {"rtol": r, "atol": a} for k, (r, a) in self.per_output.items()}},
            "seed": self.seed,
            "samples_per_shape": self.samples_per_shape,
            "shapes": [s.to_dict() for s in self.shapes],
            "providers": [p.to_dict() for p in self.providers],
            "failures": list(self.failures),
            "notes": list(self.notes),
            "settings": dict(self.settings),
            "versions": dict(self.versions),
            "duration_s": self.duration_s,
        }

    def junit_suites(self, classname: str = "onnxtax.parity") -> list:
        """One suite per provider, one testcase per shape x output; a provider that could not
        load is one error case, a skipped one one skipped case, a gated fallback one failure.
        Case classnames are CLASSNAME.PROVIDER (CLASSNAME.model for failures of no provider)."""
        from onnxtax.report import JUnitCase, JUnitSuite

        suites = []
        for pr in self.providers:
            case_class = f"{classname}.{pr.request.short}"
            suite = JUnitSuite(f"parity {pr.label}", properties={"provider": pr.request.name, "onnx": self.onnx})
            if pr.status == "skipped":
                suite.cases.append(JUnitCase("provider", case_class, skipped=pr.reason or "skipped"))
            elif pr.placement is None and pr.status == "error":
                suite.cases.append(JUnitCase("session", case_class, error=pr.reason or "could not load"))
            for case in pr.cases:
                details = _case_details(case)
                jc = JUnitCase(f"{case.shape} {case.output}", case_class, time_s=case.time_s, details=details)
                if case.status == "failed":
                    jc.failure = case.reason or "failed"
                elif case.status == "error":
                    jc.error = case.reason or "error"
                suite.cases.append(jc)
            if self.settings.get("fail_on_fallback") and pr.placement is not None:
                jc = JUnitCase("placement", case_class, details=placement_text(pr.placement))
                if pr.placement.fell_back or pr.placement.method == "unavailable":
                    jc.failure = _fallback_reason(pr)
                suite.cases.append(jc)
            suites.append(suite)
        if self.model_failures:
            suites.append(JUnitSuite("parity model", [JUnitCase("model", f"{classname}.model", failure=f)
                                                       for f in self.model_failures]))
        return suites

    def markdown(self) -> str:
        """A GitHub step summary: verdict, one row per provider, the failures."""
        verdict = "passed" if self.passed else "FAILED"
        icon = "✅" if self.passed else "❌"
        lines = [f"### {icon} onnxtax parity {verdict}: `{self.onnx}` vs `{self.model_spec or self.class_name}`", ""]
        lines.append(f"{len(self.shapes)} shapes ({', '.join(s.label for s in self.shapes) or 'none'}), "
                     f"tolerance |a-b| <= {self.atol:g} + {self.rtol:g}*|b|, seed {self.seed}.")
        lines += ["", "| provider | status | cases passed | worst max abs diff | worst tolerance ratio | placement |",
                  "|---|---|---|---|---|---|"]
        for pr in self.providers:
            passed = sum(1 for c in pr.cases if c.passed)
            worst_abs, worst_ratio = _provider_worst(pr)
            place = placement_text(pr.placement) if pr.placement else (pr.reason or "")
            lines.append(f"| {pr.label} | {pr.status} | {passed}/{len(pr.cases)} | "
                         f"{_fmt_opt(worst_abs)} | {_fmt_opt(worst_ratio)} | {place} |")
        if self.failures:
            lines += ["", "**Failures**", ""]
            lines += [f"- {f}" for f in self.failures[:30]]
            if len(self.failures) > 30:
                lines.append(f"- ... and {len(self.failures) - 30} more")
        return "\n".join(lines) + "\n"


def _fmt_opt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def _provider_worst(pr: ProviderResult) -> tuple[float | None, float | None]:
    stats = [c.stats for c in pr.cases if c.stats is not None and c.stats.samples]
    if not stats:
        return None, None
    ratios = [s.worst.tolerance_ratio for s in stats if s.worst is not None]
    return max(s.max_abs_diff for s in stats), (max(ratios) if ratios else None)


def _case_details(case: CaseResult) -> str:
    s = case.stats
    if s is None or not s.elements:
        return case.reason or ""
    lines = [f"samples={s.samples} elements={s.elements} outside={s.outside} ({_pct(s.outside_pct)})",
             f"max_abs_diff={s.max_abs_diff:.6g} max_rel_diff={s.max_rel_diff:.6g} "
             f"cosine_min={'-' if s.cosine_min is None else f'{s.cosine_min:.9f}'}",
             f"rtol={s.rtol:g} atol={s.atol:g} onnx_shape={s.onnx_shape} source_shape={s.source_shape}"]
    if s.worst:
        w = s.worst
        lines.append(f"worst index={list(w.index)} sample={w.sample} onnx={_num(w.onnx)} source={_num(w.source)} "
                     f"tolerance_ratio={w.tolerance_ratio:.3g}")
    if case.reason:
        lines.insert(0, case.reason)
    return "\n".join(lines)


def placement_text(p: Placement) -> str:
    if p.method == "unavailable":
        return "placement unknown (this onnxruntime cannot report node assignment)"
    text = f"{p.on_provider}/{p.total_nodes} nodes on {p.provider}"
    if p.fell_back:
        others = ", ".join(f"{n} on {ep}" for ep, n in p.by_provider.items() if ep != p.provider)
        text += f"; {others} ({_fallback_ops(p)})"
    return text


def _fallback_ops(p: Placement) -> str:
    return ", ".join(f"{op} x{n}" for op, n in p.fallback_op_types.items())


def _fallback_reason(pr: ProviderResult) -> str:
    p = pr.placement
    assert p is not None
    if p.method == "unavailable":
        return f"{pr.label}: cannot tell where nodes ran (no graph assignment record) and --fail-on-fallback is set"
    others = ", ".join(ep for ep in p.by_provider if ep != p.provider)
    return (f"{pr.label}: {p.fallback_count} of {p.total_nodes} nodes fell back to {others} ({_fallback_ops(p)}) "
            "and --fail-on-fallback is set")


# --------------------------------------------------------------------------- inputs and shapes


def parse_tolerances(texts: Sequence[str]) -> dict[str, tuple[float, float]]:
    """`--tolerance logits=1e-3:1e-4` -> {"logits": (1e-3, 1e-4)}."""
    out: dict[str, tuple[float, float]] = {}
    for text in texts:
        name, sep, value = text.partition("=")
        rtol_text, sep2, atol_text = value.partition(":")
        try:
            pair = (float(rtol_text), float(atol_text))
        except ValueError:
            pair = None
        if not sep or not sep2 or not name.strip() or pair is None or min(pair) < 0 or not all(
                map(math.isfinite, pair)):
            raise InputSpecError(f"--tolerance '{text}' needs OUTPUT=RTOL:ATOL with non-negative numbers",
                                 "e.g. --tolerance logits=1e-3:1e-4")
        out[name.strip()] = pair
    return out


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
    """Check one .npz (arrays keyed by input name, one batch) against the specs."""
    path = Path(path)
    arrays = _read_npz(path)
    sizes: dict[str, int] = {}
    shapes: dict[str, list[int]] = {}
    for spec in specs:
        if spec.name not in arrays:
            raise InputSpecError(f"--data {path}: no array named '{spec.name}' (it has: {', '.join(arrays) or 'none'})",
                                 f"save one array per model input: np.savez(file, {spec.name}=...)")
        arr = arrays[spec.name]
        want = np.dtype(DTYPES[spec.dtype][0])
        if arr.dtype != want:
            raise InputSpecError(f"--data {path}: '{spec.name}' has dtype {arr.dtype}, the model input is {spec.dtype}",
                                 f"save it as {want} (arr.astype(np.{want}))")
        if arr.ndim != len(spec.dims):
            raise InputSpecError(f"--data {path}: '{spec.name}' has shape {list(arr.shape)}, the model input is "
                                 f"{list(spec.dims)} ({len(spec.dims)} dims)", "save arrays with the input's rank")
        for axis, (want_dim, got) in enumerate(zip(spec.dims, arr.shape)):
            if isinstance(want_dim, int):
                if want_dim != got:
                    raise InputSpecError(f"--data {path}: '{spec.name}' has {got} at axis {axis} where the model "
                                         f"input is fixed at {want_dim} (shape {list(arr.shape)} vs {list(spec.dims)})",
                                         "save arrays whose static dims match the model input")
            elif sizes.setdefault(want_dim, int(got)) != got:
                raise InputSpecError(f"--data {path}: axis '{want_dim}' is {sizes[want_dim]} in one array and {got} "
                                     f"in '{spec.name}'", "arrays in one file are one batch: shared axes must agree")
        shapes[spec.name] = list(arr.shape)
    size_text = ",".join(f"{k}={v}" for k, v in sizes.items())
    label = f"{path.name}" + (f"({size_text})" if size_text else "")
    return ShapePlan(label, sizes, 1, "data", str(path), shapes)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise InputSpecError(f"--data {path}: file not found", "give .npz files saved with np.savez")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not hasattr(npz, "files"):
                raise ValueError("not an .npz archive")
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise InputSpecError(f"--data {path}: not a readable .npz file ({exc})",
                             "save with np.savez(path, input_name=array, ...)") from exc


# --------------------------------------------------------------------------- source model


class _Source:
    """The eager model, in eval mode under inference_mode, called positionally in spec order."""

    def __init__(self, module: Any, specs: list[InputSpec], ranges: dict[str, ValueRange] | None = None):
        self.module = module
        self.specs = specs
        self.ranges = ranges or {}
        self.paths: list[str] | None = None

    def __call__(self, arrays: dict[str, np.ndarray], where: str, data_file: str | None = None
                 ) -> list[np.ndarray]:
        import torch

        from onnxtax.inputs import flatten_outputs, to_numpy, torch_tensors

        tensors = torch_tensors(self.specs, arrays)
        try:
            with torch.inference_mode():
                result = self.module(*tensors)
        except Exception as exc:  # noqa: BLE001 - any error in user code at a chosen shape
            shapes = ", ".join(f"{s.name}{list(arrays[s.name].shape)}" for s in self.specs)
            hint = self._raise_hint(data_file)
            raise InputSpecError(f"the source model raised {type(exc).__name__}: {str(exc).strip()[:300]} "
                                 f"at {where} ({shapes})", hint) from exc
        flat = flatten_outputs(result)  # the exporter's order and names, shared on purpose
        if not flat:
            raise InputSpecError(f"the source model returns no tensors at {where}",
                                 "forward() must return a tensor, or a tuple/list/dict of them")
        self.paths = [p for p, _ in flat]
        return [to_numpy(t) for _, t in flat]

    def _raise_hint(self, data_file: str | None) -> str:
        if data_file is not None:
            return (f"the arrays in {data_file} do not fit the model (values or sizes it rejects, e.g. a token id "
                    "at or above the vocabulary size): fix the file, or check it with the model in Python first")
        hint = ("check that the inputs fit the model (--input NAME:DIMS:DTYPE) and choose sizes it accepts "
                "with --dim SYMBOL=V1,V2")
        ints = [s.name for s in self.specs if DTYPES[s.dtype][0].startswith(("int", "uint"))]
        if ints:
            drawn = ", ".join(f"{n} from {_range_text(self.ranges.get(n))}" for n in ints)
            hint += f"; integer inputs are drawn as: {drawn} (set them with --range NAME=LOW:HIGH, HIGH exclusive)"
        return hint


def _range_text(r: ValueRange | None) -> str:
    return "0:10 (default)" if r is None else f"{int(r.low)}:{int(r.high)}"


def _same_outputs(first: list[np.ndarray], second: list[np.ndarray]) -> tuple[bool, str]:
    if len(first) != len(second):
        return False, f"{len(first)} outputs, then {len(second)}"
    for i, (a, b) in enumerate(zip(first, second)):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False, f"output {i} is {a.dtype}{list(a.shape)}, then {b.dtype}{list(b.shape)}"
        equal = np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
        if not equal:
            diff = np.nanmax(np.abs(a.astype(np.float64) - b.astype(np.float64))) if a.size else 0.0
            return False, f"output {i} differs by up to {diff:.3g} between two identical calls"
    return True, ""


# --------------------------------------------------------------------------- ONNX side


@dataclass
class _Session:
    result: ProviderResult
    session: Any


def _open_sessions(onnx_path: Path, requests: list[ProviderRequest], *, opt_level: str, threads: int | None
                   ) -> list[_Session | ProviderResult]:
    from onnxtax.providers import open_session, placement_of

    out: list[_Session | ProviderResult] = []
    for req in requests:
        pr = ProviderResult(req)
        t0 = time.perf_counter()
        try:
            session = open_session(onnx_path, req, opt_level=opt_level, threads=threads, record_placement=True)
        except CheckFailed as exc:
            line, node = ort_error_summary(exc.__cause__ or exc)
            pr.status = "error"
            pr.reason = f"session could not load: {line}" + (f" (node {node})" if node else "")
            out.append(pr)
            continue
        pr.session_load_s = time.perf_counter() - t0
        pr.placement = placement_of(session, req.name)
        out.append(_Session(pr, session))
    return out


# --------------------------------------------------------------------------- the check


def check_parity(model: Any, onnx_path: str | Path, inputs: Sequence[str | InputSpec] | ResolvedInputs | None = None,
                 *,
                 dims: dict[str, list[int]] | None = None, samples: int = DEFAULT_SAMPLES, seed: int = PARITY_SEED,
                 ranges: dict[str, ValueRange | tuple[float, float]] | None = None,
                 data_files: Sequence[str | Path] | None = None,
                 rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL,
                 tolerances: dict[str, tuple[float, float]] | None = None,
                 providers: Sequence[str | ProviderRequest] | None = None, skip_unavailable: bool = False,
                 fail_on_fallback: bool = False, opt_level: str = OPT_LEVEL, threads: int | None = None,
                 max_shapes: int = MAX_SHAPES, progress: Progress | None = None) -> ParityReport:
    """Compare the ONNX model with the eager source on every provider, shape and sample.

    Args:
        model: a spec string (`path/to/file.py:NAME`), a LoadedModel or an nn.Module.
        onnx_path: the exported model.
        inputs: `NAME:DIMS[:DTYPE]` strings or InputSpecs, in forward() order, or ResolvedInputs;
            default: the manifest beside the model, else the ONNX graph's inputs (inputs.resolve_inputs).
        dims: sizes per dynamic axis, e.g. {"batch": [1, 8, 33]}; default 1, an even and an odd size.
        samples: random samples per shape. ranges: value range per input (integers: high exclusive).
        data_files: `.npz` files, arrays keyed by input name, one batch each.
        rtol, atol: default tolerance; tolerances: per ONNX output name, (rtol, atol).
        providers: names (`cpu`, `openvino:device_type=CPU`) or ProviderRequests; default every
            compute provider on this host.
        fail_on_fallback: any node ORT places on another provider fails that provider.
        progress: a Progress, called as progress(description, done, total).

    Raises OnnxtaxError (exit 2) for unusable inputs, unknown/unavailable providers and a
    non-deterministic source. Failures of the artifact are in the report, never raised.
    """
    t_start = time.perf_counter()
    onnx_path = Path(onnx_path)
    if samples < 0 or (samples == 0 and not data_files):
        raise InputSpecError(f"--samples {samples}: need at least one sample", "use --samples 1 or more, or --data")
    if opt_level not in OPT_LEVELS:
        raise InputSpecError(f"unknown --opt-level '{opt_level}'", f"use one of: {', '.join(OPT_LEVELS)}")
    if not (math.isfinite(rtol) and math.isfinite(atol)) or rtol < 0 or atol < 0:
        # a NaN bound makes every `diff > bound` false: the gate would pass anything
        raise InputSpecError(f"--rtol {rtol:g} --atol {atol:g}: tolerances must be finite, non-negative numbers",
                             "e.g. --rtol 1e-4 --atol 1e-5")
    if threads is not None and threads < 0:
        raise InputSpecError(f"--threads {threads}: must be 0 (ORT's choice) or more", "e.g. --threads 2")
    if max_shapes < 1:
        raise InputSpecError("max_shapes must be at least 1", "e.g. --max-shapes 9")

    from onnxtax.inputs import resolve_inputs
    from onnxtax.loading import check_inputs_match, resolve_model
    from onnxtax.providers import resolve_providers

    resolved = resolve_inputs(onnx_path, inputs, ranges=ranges)
    requests, skipped = resolve_providers(providers, skip_unavailable=skip_unavailable)
    loaded = resolve_model(model)
    module = loaded.module
    check_inputs_match(module, resolved.specs, loaded.spec)
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        return _run(module, None if loaded.in_memory else loaded.spec, onnx_path, resolved, dims=dims,
                    samples=samples, seed=seed, data_files=data_files, rtol=rtol, atol=atol, tolerances=tolerances or {}, requests=requests,
                    skipped=skipped, fail_on_fallback=fail_on_fallback, opt_level=opt_level, threads=threads,
                    max_shapes=max_shapes, progress=progress, t_start=t_start)
    finally:
        for m, was_training in flags:
            m.training = was_training


def _run(module: Any, spec_text: str | None, onnx_path: Path, resolved: ResolvedInputs, *, dims, samples, seed,
         data_files, rtol, atol, tolerances, requests, skipped, fail_on_fallback, opt_level, threads, max_shapes,
         progress, t_start) -> ParityReport:
    from onnxtax.report import package_versions

    specs = resolved.specs
    report = ParityReport(str(onnx_path), spec_text, type(module).__name__, input_source=resolved.source,
                          inputs=resolved.to_dicts(), export_sizes=dict(resolved.export_sizes), rtol=rtol, atol=atol,
                          per_output=dict(tolerances), seed=seed, samples_per_shape=samples,
                          notes=list(resolved.notes),
                          settings={"fail_on_fallback": fail_on_fallback, "opt_level": opt_level,
                                    "threads": threads, "max_shapes": max_shapes},
                          versions=package_versions())
    output_names = resolved.output_names
    for name, pair in tolerances.items():
        if name not in output_names:
            raise InputSpecError(f"--tolerance names '{name}', which is not an ONNX output",
                                 f"outputs: {', '.join(output_names)}")
        if len(pair) != 2 or not all(math.isfinite(v) and v >= 0 for v in pair):
            raise InputSpecError(f"tolerance of '{name}' is {pair}: need (rtol, atol), finite and non-negative",
                                 "e.g. --tolerance logits=1e-3:1e-4")
    plans = plan_shapes(specs, dims, resolved.export_sizes, samples=samples, joint=resolved.source == "onnx-graph",
                        max_shapes=max_shapes) if samples else []
    plans += [plan_data_file(f, specs) for f in data_files or []]
    report.shapes = plans

    opened = _open_sessions(onnx_path, requests, opt_level=opt_level, threads=threads)
    live = [o for o in opened if isinstance(o, _Session)]
    report.providers = [o.result if isinstance(o, _Session) else o for o in opened]
    for req in skipped:
        report.providers.append(ProviderResult(req, "skipped", "skipped: not available on this host"))
    for pr in report.providers:
        if pr.status == "error":
            report.failures.append(f"{pr.label}: {pr.reason}")
        if fail_on_fallback and pr.placement is not None and (pr.placement.fell_back
                                                              or pr.placement.method == "unavailable"):
            pr.status = "failed"
            pr.reason = _fallback_reason(pr)
            report.failures.append(pr.reason)
    if not requests:
        report.model_failures.append("no provider ran: every requested provider was skipped, nothing was compared")
        report.failures.append(report.model_failures[-1])
    if not live:
        report.duration_s = time.perf_counter() - t_start
        return report

    value_ranges = resolved.ranges
    recipe = SampleRecipe(seed, value_ranges)
    source = _Source(module, specs, value_ranges)
    comparison = _Comparison(live, output_names, rtol, atol, tolerances)
    total = sum(p.samples for p in plans) * (1 + len(live))
    done = 0
    # determinism is checked on the first sample and again at the largest shape: dropout left on
    # can leave a one-element output unchanged by chance, rarely a large one
    largest = max(range(len(plans)), key=lambda i: math.prod(plans[i].sizes.values()), default=0)
    for pi, plan in enumerate(plans):
        for k in range(plan.samples):
            arrays = _sample(plan, specs, recipe, k)
            where = f"{plan.label} sample {k}"
            expected = source(arrays, where, plan.file)
            if k == 0 and pi == largest and done > 0:
                _refuse_nondeterministic(source, arrays, where, expected)
            if done == 0:
                mismatch = _first_sample_checks(source, arrays, where, expected, output_names, report)
                if mismatch:
                    report.model_failures.append(mismatch)
                    report.failures.append(mismatch)
                    for s in live:
                        s.result.status, s.result.reason = "failed", mismatch
                    report.duration_s = time.perf_counter() - t_start
                    return report
            done += 1
            _tick(progress, done, total, where)
            feeds = resolved.feeds(arrays)
            for si in range(len(live)):
                comparison.run(si, pi, k, plan, feeds, expected)
                done += 1
                _tick(progress, done, total, where)

    comparison.recheck_in_fresh_sessions(plans, lambda plan, k: _sample(plan, specs, recipe, k), source, resolved,
                                         onnx_path, opt_level=opt_level, threads=threads)
    comparison.collect(report, plans)
    report.duration_s = time.perf_counter() - t_start
    return report


def _refuse_nondeterministic(source: _Source, arrays: dict, where: str, expected: list) -> None:
    same, detail = _same_outputs(expected, source(arrays, where))
    if not same:
        raise OnnxtaxError(
            f"the source model is not deterministic ({where}): {detail}; parity against a model that "
            "answers the same input differently is meaningless",
            "remove randomness from forward() (dropout called with training=True, torch.rand*, "
            "sampling) and keep dropout/batch-norm in eval mode")


def _first_sample_checks(source: _Source, arrays: dict, where: str, expected: list, output_names: list[str],
                         report: ParityReport) -> str | None:
    """Refuse a non-deterministic source; match outputs. Returns a count-mismatch failure, if any."""
    _refuse_nondeterministic(source, arrays, where, expected)
    report.outputs = [{"name": n, "source_path": p}
                      for n, p in itertools.zip_longest(output_names, source.paths or [])]
    if len(expected) == len(output_names):
        return None
    paths = ", ".join(source.paths or []) or "none"
    return (f"outputs: the source returns {len(expected)} tensors ({paths}), the ONNX model has "
            f"{len(output_names)} ({', '.join(output_names)}); they cannot be matched")


class _Comparison:
    """Running statistics per (provider, shape, output); one ORT run at a time, no arrays kept."""

    def __init__(self, live: list[_Session], output_names: list[str], rtol: float, atol: float,
                 tolerances: dict[str, tuple[float, float]]):
        self.live, self.output_names = live, output_names
        self.rtol, self.atol, self.tolerances = rtol, atol, tolerances
        self.stats: dict[tuple[int, int, int], OutputStats] = {}
        self.run_errors: dict[tuple[int, int], str] = {}
        self.error_sample: dict[tuple[int, int], int] = {}
        self.run_time: dict[tuple[int, int], float] = {}
        self.fresh_notes: dict[tuple[int, int], str] = {}  # failures a fresh session does not reproduce

    def run(self, si: int, pi: int, k: int, plan: ShapePlan, feeds: dict, expected: list) -> None:
        """Sample k of shape pi on provider si; after a run error that shape is not retried there."""
        if (si, pi) in self.run_errors:
            return
        t0 = time.perf_counter()
        try:
            got = self.live[si].session.run(None, feeds)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own pybind types
            line, node = ort_error_summary(exc)
            self.run_errors[(si, pi)] = (f"ONNX Runtime failed to run at {plan.label}: {line}"
                                         + (f" (node {node})" if node else ""))
            self.error_sample[(si, pi)] = k
            return
        self.run_time[(si, pi)] = self.run_time.get((si, pi), 0.0) + time.perf_counter() - t0
        for oi, (a, b) in enumerate(zip(got, expected)):
            acc = self.stats.get((si, pi, oi))
            if acc is None:
                r, t = self.tolerances.get(self.output_names[oi], _default_tolerance(b, self.rtol, self.atol))
                acc = self.stats[(si, pi, oi)] = OutputStats(r, t)
            acc.update(a, b, sample=k)

    def failing_shapes(self, si: int, n_plans: int) -> list[tuple[int, int]]:
        """(shape index, sample) of each shape where provider si failed, with the sample to replay."""
        out = []
        for pi in range(n_plans):
            if (si, pi) in self.run_errors:
                out.append((pi, self.error_sample[(si, pi)]))
                continue
            bad = [self.stats[(si, pi, oi)] for oi in range(len(self.output_names))
                   if (si, pi, oi) in self.stats and not self.stats[(si, pi, oi)].passed]
            if bad:
                worst = bad[0].worst
                out.append((pi, worst.sample if worst is not None else 0))
        return out

    def recheck_in_fresh_sessions(self, plans: list[ShapePlan], sample_of: Callable, source: _Source,
                                  resolved: ResolvedInputs, onnx_path: Path, *, opt_level: str,
                                  threads: int | None, limit: int = 2) -> None:
        """Replay a failing shape in a new session. Shapes run one after another in one session, as in
        a server; when a provider fails at a shape only after other shapes ran (a provider keeping
        state from an earlier shape), the fresh session passes and the reason says so."""
        from onnxtax.providers import open_session

        for si, live in enumerate(self.live):
            for pi, k in [(pi, k) for pi, k in self.failing_shapes(si, len(plans)) if pi > 0][:limit]:
                plan = plans[pi]
                arrays = sample_of(plan, k)
                expected = source(arrays, f"{plan.label} sample {k}", plan.file)
                try:
                    session = open_session(onnx_path, live.result.request, opt_level=opt_level, threads=threads,
                                           record_placement=False)
                    got = session.run(None, resolved.feeds(arrays))
                except Exception:  # noqa: BLE001 - the original failure stands on its own
                    continue
                checks = [OutputStats(*self.tolerances.get(name, _default_tolerance(b, self.rtol, self.atol)))
                          for name, b in zip(self.output_names, expected)]
                if len(got) == len(expected) and all(c.update(a, b) for c, a, b in zip(checks, got, expected)):
                    self.fresh_notes[(si, pi)] = (
                        f"a new {live.result.request.name} session computes sample {k} of {plan.label} correctly: "
                        f"it fails only after {', '.join(p.label for p in plans[:pi])} ran in the same session, so "
                        "the provider keeps state from an earlier shape (a provider bug a long-lived session "
                        "serving several shapes hits too)")

    def collect(self, report: ParityReport, plans: list[ShapePlan]) -> None:
        """Turn the statistics into one CaseResult per provider x shape x output, with reasons."""
        static_notes = [n for n in report.notes if "is static" in n]
        for si, s in enumerate(self.live):
            pr = s.result
            for pi, plan in enumerate(plans):
                error = self.run_errors.get((si, pi))
                fresh = self.fresh_notes.get((si, pi))
                share = self.run_time.get((si, pi), 0.0) / max(1, len(self.output_names))
                for oi, name in enumerate(self.output_names):
                    acc = self.stats.get((si, pi, oi))
                    if acc is None:  # no sample ran: the first run failed
                        reason = (error or "not run") + (
                            f"; {fresh}" if fresh else f"; {static_notes[0]}" if static_notes
                            else _run_error_hint(plan))
                        case = CaseResult(plan.label, name, "error", reason, None, share)
                    else:
                        reason = acc.failure_reason()
                        if reason and fresh:
                            reason += f"; {fresh}"
                        elif reason and any(p.startswith("shape ") for p in acc.problems):
                            reason += _baked_hint(acc, plan, report.export_sizes)
                        if error is not None:  # later samples stopped by a run error
                            reason = "; ".join(filter(None, [reason, error]))
                        case = CaseResult(plan.label, name, "passed" if reason is None else "failed", reason,
                                          acc, share)
                    pr.cases.append(case)
                    if not case.passed:
                        report.failures.append(f"{pr.label} {plan.label} {name}: {case.reason}")
        for si, s in enumerate(self.live):
            pr = s.result
            if any(not c.passed for c in pr.cases) and pr.status == "passed":
                pr.status = "failed"
                others = [o.result for o in self.live if o is not s]
                pr.reason = (_fresh_diagnosis(pr, [n for (i, _), n in self.fresh_notes.items() if i == si])
                             or _cross_provider_diagnosis(pr, others) or _provider_diagnosis(pr, plans))
            elif pr.status == "passed" and pr.placement and pr.placement.fell_back:
                pr.reason = placement_text(pr.placement)


def _default_tolerance(expected: np.ndarray, rtol: float, atol: float) -> tuple[float, float]:
    return (rtol, atol) if expected.dtype.kind in "fc" else (0.0, 0.0)


def _sample(plan: ShapePlan, specs: list[InputSpec], recipe: SampleRecipe, k: int) -> dict[str, np.ndarray]:
    if plan.origin == "data":
        assert plan.file is not None
        arrays = _read_npz(Path(plan.file))
        return {s.name: arrays[s.name] for s in specs}
    return make_inputs(specs, plan.sizes, recipe, k)


def _tick(progress: Progress | None, done: int, total: int, where: str) -> None:
    if progress is not None:
        progress(where, done, total)


def _run_error_hint(plan: ShapePlan) -> str:
    if plan.origin != "random" or not plan.sizes:
        return ""
    axes = ", ".join(f"'{k}'" for k in plan.sizes)
    return (f" ({axes} declared dynamic, yet the graph cannot run at {plan.label}: a size was probably fixed at "
            "export, e.g. int(x.shape[0]) or a reshape/expand to a traced size)")


def _baked_hint(acc: OutputStats, plan: ShapePlan, export_sizes: dict[str, int]) -> str:
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


def _fresh_diagnosis(pr: ProviderResult, fresh_notes: list[str]) -> str | None:
    if not fresh_notes:
        return None
    return (f"{pr.request.name} gives wrong results at some shapes only after other shapes ran in the same session "
            "(a new session computes them correctly): a provider bug, not an export problem")


def _cross_provider_diagnosis(pr: ProviderResult, others: list[ProviderResult]) -> str | None:
    """A provider failing cases another provider passes: the export is right, this provider is not."""
    bad = {(c.shape, c.output) for c in pr.cases if not c.passed}
    for other in others:
        good = {(c.shape, c.output) for c in other.cases if c.passed}
        if bad and bad <= good:
            return (f"{other.label} passes the cases {pr.label} fails, so the exported graph is right there: "
                    f"{pr.request.name} computes them differently from the source (a provider bug or a precision "
                    "it lowers to)")
    return None


def _provider_diagnosis(pr: ProviderResult, plans: list[ShapePlan]) -> str | None:
    """When some random shapes pass and others fail, say what that pattern means."""
    bad = list(dict.fromkeys(c.shape for c in pr.cases if not c.passed))
    good = [p.label for p in plans if p.label not in bad and p.origin == "random"]
    if good and all(p.origin == "random" for p in plans if p.label in bad):
        return (f"passes at {', '.join(good)} but fails at {', '.join(bad)}: the graph is right only at some sizes "
                "of a dynamic axis, so a size was fixed at export or a shape-dependent branch "
                "(e.g. `if x.shape[0] > 1`) was specialised")
    return None
