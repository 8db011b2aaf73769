"""The report of one parity run: per provider x shape x output, with its JSON, JUnit and markdown.

JSON schema of `ParityReport.to_dict()` (schema "onnxtax.parity/2"; keys stable;
docs/parity.md lists the changes from /1):
{
  "schema": "onnxtax.parity/2",
  "passed": true,
  "model": {"spec": "examples/fraud_detector.py:FraudDetector" | null, "class_name": "FraudDetector"},
  "onnx": "fraud.onnx",
  "input_source": "arguments" | "manifest" | "onnx-graph",
  "inputs": [{"name": "x", "dims": ["batch", 128], "dtype": "float32", "onnx_name": "x",
              "range": [0, 10] | null, "domain": "all ones (default for mask-like names)"}],
  "export_sizes": {"batch": 3},                      (known export-time sizes only)
  "outputs": [{"name": "prob", "source_path": "[0]", "constant": false, "constant_allowed": false}],
                                         (ONNX name, where it sits in forward()'s result)
  "tolerance": {"rtol": 1e-4, "atol": 1e-5, "atol_scaled_by": "rms", "min_cosine": 0.999,
                "per_output": {"logits": {"rtol": 1e-3, "atol": 1e-4}}},
  "allow_constant": ["mask_out"],
  "assumed_ranges": {"batch": {"min": null, "max": 32}},   (from the manifest)
  "seed": 0, "samples_per_shape": 3,
  "shapes": [{"label": "batch=1", "sizes": {"batch": 1}, "origin": "random" | "data" | "assumed",
              "file": null | "prod.npz", "samples": 3, "input_shapes": {"x": [1, 128]},
              "assumption": null | "batch <= 32"}],
  "providers": [{
      "name": "CPUExecutionProvider", "short": "cpu", "label": "cpu", "options": {},
      "status": "passed" | "failed" | "error" | "skipped",
      "reason": null | "skipped: not available on this host" | "<one line>",
      "session_load_s": 0.01 | null,
      "placement": null | {"provider", "method", "total_nodes", "on_provider", "fallback", "by_provider",
                           "fallback_op_types", "fallback_nodes"},
      "cases": [{"shape": "batch=1", "output": "prob", "status": "passed" | "failed" | "error",
                 "reason": null | "<one line>", "rtol": 1e-4, "atol": 1e-5,
                 "scale": 0.52 | null, "atol_effective": 5.2e-06 | null, "min_cosine": 0.999 | null,
                 "samples": 3, "failed_samples": 0, "elements": 3,
                 "source_shape": [1, 1], "onnx_shape": [1, 1], "source_dtype": "float32", "onnx_dtype": "float32",
                 "max_abs_diff": 5.9e-08, "max_rel_diff": 1.2e-07, "outside": 0, "outside_pct": 0.0,
                 "nan_inf_mismatch": 0, "cosine_min": 1.0 | null, "cosine_failed": 0,
                 "worst": null | {"index": [0, 0], "sample": 1, "onnx": 0.51, "source": 0.51,
                                  "abs_diff": 5.9e-08, "tolerance_ratio": 0.005},
                 "time_s": 0.0002}],
      "localization": null | {...}}],             (--localize: see onnxtax.parity.localization, keys stable)
  "failures": ["cpu batch=7 prob: ..."],            (one line each; empty when passed)
  "notes": ["..."],
  "settings": {"fail_on_fallback": false, "opt_level": "all", "threads": null, "max_shapes": 9,
               "test_assumed": true, "assumed_size_cap": 4096, "localize": false,
               "share_weights": "auto" | "always" | "never"},
  "weights": null | {"shared_tensors": 8, "shared_bytes": 1073807360,
                     "transposed_tensors": 0, "transposed_bytes": 0, "transposed": {"val_2": "PARAMETER"},
                     "not_shared_tensors": 0, "not_shared_bytes": 0, "not_shared": {"NAME": "<why>"}},
                                                    (null: the CPU session loaded the weights from the file;
                                                    transposed: shared initializers the exporter stored as a
                                                    parameter transposed, read by the eager model through
                                                    transposed views; included in shared_*)
  "versions": {"python": ..., "torch": ..., "onnxruntime": ..., ...},
  "duration_s": 1.23,
  "memory": {"weights_bytes": 268500996, "peak_rss_bytes": 567382016, "peak_source": "VmHWM since stage start",
             "peak_over_weights": 2.113, "before_model_bytes": 260734976, "added_over_weights": 1.12,
             "preflight": null | {"kind": "parity", "factor": 1.05, "need_bytes": ..,
             "available_bytes": .., "available_source": "..", "fits": true, "check": "warn", "warning": null,
             "advice": null}}     (onnxtax.core.memory; docs/large-models.md)
}
"scale" is the source output's RMS at that shape (floats; null for integers),
"atol_effective" = atol * scale: what difference the check could detect there.
"tolerance_ratio" is |a-b| / (atol_effective + rtol*|b|): above 1 fails; a NaN/Inf mismatch makes it
infinite, written as the string "inf" (JSON has no infinity). Max abs/rel diff and cosine
cover the elements finite on both sides; "nan_inf_mismatch" counts the others. "status"
"error" marks a case ONNX Runtime could not run (or a provider whose session did not load).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from onnxtax.core.compare import OutputStats
from onnxtax.core.defaults import PARITY_NOISE_CAP as NOISE_CAP
from onnxtax.core.defaults import PARITY_ATOL as DEFAULT_ATOL
from onnxtax.core.defaults import PARITY_MIN_COSINE as DEFAULT_MIN_COSINE
from onnxtax.core.defaults import PARITY_RTOL as DEFAULT_RTOL
from onnxtax.core.defaults import PARITY_SAMPLES as DEFAULT_SAMPLES
from onnxtax.core.providers import Placement, ProviderRequest
from onnxtax.core.report import Verdict
from onnxtax.parity.shapes import ShapePlan

SCHEMA = "onnxtax.parity/2"
CaseStatus = Literal["passed", "failed", "error"]  # error: ONNX Runtime could not run the case
ProviderStatus = Literal["passed", "failed", "error", "skipped"]  # skipped: not on this host


@dataclass
class CaseResult:
    """One provider x shape x output."""

    shape: str
    output: str
    status: CaseStatus
    reason: str | None = None
    stats: OutputStats | None = None
    time_s: float = 0.0
    hint: str | None = None  # what to run next, when nothing was localised
    localization: Any = None  # the Localization of this case, when --localize examined it
    only_constant: bool = False  # it matched, and fails only as "not compared" (the model-level line says why)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def explanation(self) -> str | None:
        """The reason, with what localisation found in this case (or, when it did not run, the hint)."""
        if self.reason is None:
            return None
        loc = self.localization
        if loc is not None:
            return f"{self.reason}; {'localized' if loc.found else 'localisation'}: {loc.summary}"
        return f"{self.reason} ({self.hint})" if self.hint else self.reason

    def to_dict(self) -> dict:
        data = {"shape": self.shape, "output": self.output, "status": self.status, "reason": self.explanation}
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
    localization: Any = None  # onnxtax.parity.localization.Localization of its first failing case, when asked for
    gate: str | None = None  # the --fail-on-fallback failure, when the placement failed it

    @property
    def label(self) -> str:
        return self.request.label

    @property
    def explanation(self) -> str | None:
        """Why it failed, with where localisation found the first divergence."""
        loc = self.localization
        if loc is None or not loc.found:
            return self.reason
        found = f"localized: {loc.summary}"
        return f"{self.reason}; {found}" if self.reason else found

    def to_dict(self) -> dict:
        data = self.request.to_dict()
        data.update({"label": self.label, "status": self.status, "reason": self.explanation,
                     "session_load_s": self.session_load_s,
                     "placement": self.placement.to_dict() if self.placement else None,
                     "cases": [c.to_dict() for c in self.cases],
                     "localization": self.localization.to_dict() if self.localization is not None else None})
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
    min_cosine: float | None = DEFAULT_MIN_COSINE
    allow_constant: list[str] = field(default_factory=list)
    assumed_ranges: dict[str, dict] = field(default_factory=dict)  # axis -> {"min", "max"} from the manifest
    seed: int = 0
    samples_per_shape: int = DEFAULT_SAMPLES
    shapes: list[ShapePlan] = field(default_factory=list)
    providers: list[ProviderResult] = field(default_factory=list)
    model_failures: list[str] = field(default_factory=list)  # not tied to a provider; also in `failures`
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    rule: Any = None  # onnxtax.core.compare.ToleranceRule, with the noise measured per output
    noise_shape: str | None = None  # the shape the noise was measured at
    noise_samples: int = 0  # on how many of its samples (the largest noise per output is used)
    noise_s: float = 0.0  # what measuring it cost (one float64 forward)
    weights: dict[str, Any] | None = None  # onnxtax.core.sharing.Sharing.to_dict() when the CPU session shared them
    memory: Any = None  # onnxtax.core.memory.MemoryRecord

    @property
    def failures(self) -> list[str]:
        """One line per failure, made from the results: providers that could not load or were gated
        on their placement, then every case that failed, then the failures of no provider."""
        lines = []
        for pr in self.providers:
            if pr.status == "error" and not pr.cases:
                lines.append(f"{pr.label}: {pr.reason}")
            if pr.gate:
                lines.append(pr.gate)
        lines += [f"{pr.label} {case.shape} {case.output}: {case.explanation}" for pr in self.providers
                  for case in pr.cases if not case.passed and not case.only_constant]
        return lines + list(self.model_failures)

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
            "tolerance": {"rtol": self.rtol, "atol": self.atol, "atol_scaled_by": "rms",
                          "min_cosine": self.min_cosine,
                          "per_output": {k: {"rtol": r, "atol": a} for k, (r, a) in self.per_output.items()},
                          **self.noise_dict()},
            "allow_constant": list(self.allow_constant),
            "assumed_ranges": {k: dict(v) for k, v in self.assumed_ranges.items()},
            "seed": self.seed,
            "samples_per_shape": self.samples_per_shape,
            "shapes": [s.to_dict() for s in self.shapes],
            "providers": [p.to_dict() for p in self.providers],
            "failures": list(self.failures),
            "notes": list(self.notes),
            "settings": dict(self.settings),
            "weights": dict(self.weights) if self.weights is not None else None,
            "versions": dict(self.versions),
            "duration_s": self.duration_s,
            "memory": self.memory.to_dict() if self.memory else None,
        }


    def noise_dict(self) -> dict:
        rule = self.rule
        return {"noise_factor": rule.noise_factor if rule else None, "noise_cap": NOISE_CAP,
                "noise": dict(rule.noise) if rule else {}, "noise_measured_at": self.noise_shape,
                "noise_samples": self.noise_samples,
                "noise_note": rule.noise_note if rule else None, "noise_s": self.noise_s,
                "rule": rule.text if rule else None}


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


def fallback_reason(pr: ProviderResult) -> str:
    p = pr.placement
    assert p is not None
    if p.method == "unavailable":
        return f"{pr.label}: cannot tell where nodes ran (no graph assignment record) and --fail-on-fallback is set"
    others = ", ".join(ep for ep in p.by_provider if ep != p.provider)
    return (f"{pr.label}: {p.fallback_count} of {p.total_nodes} nodes fell back to {others} ({_fallback_ops(p)}) "
            "and --fail-on-fallback is set")
