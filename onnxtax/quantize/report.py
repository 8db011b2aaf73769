"""The report of one quantization: every INT8 build tried, per segment and provider, and the verdict.

JSON schema of `QuantizeReport.to_dict()` ("onnxtax.quantize/1"; keys stable):
{
  "schema": "onnxtax.quantize/1", "passed": true, "exit_code": 0, "written": true,
  "source": {"onnx": "fraud.onnx", "sha256": "...", "size_bytes": 50112, "spec": "...", "class_name": "..."},
  "output": "fraud.int8.onnx", "output_name": "prob",
  "settings": {"mode": "auto", "format": "qdq", "per_channel": false, "calibration_method": "minmax",
               "batch_size": 64, "seed": 0, "auto_exclude": true, "max_exclude": 8, "providers": ["cpu"],
               "preprocess": true, "exclude": [], "labels": null, "segment_key": null, "output": null,
               "min_speedup": null},                  ("mode": "recheck" for `parity` on an INT8 artifact)
  "segments": [{"name": "tail", "file": "tail.npz", "sha256": "...", "rows": 200, "labels": true,
                "segment_key_value": null}],
  "calibration": [{"file": "cal.npz", "sha256": "...", "rows": 512}],
  "budgets": [{"segment": null | "tail", "metric": "agreement@0.5", "limit": 0.97, "direction": "min"}],
  "fp32": EVALUATION,                                 (ORT FP32 vs eager; informs, never gates)
  "candidates": [{"settings": {BuildSettings}, "passed": false, "error": null | "...", "size_bytes": 20480,
                  "speed_failures": ["cpu batch 1: speedup 0.68x below --min-speedup 1.2 (...)"],
                  "exclusion_cost_us": null | {"1": 2.5},   (all nodes kept in FP32 vs none, when 2 or more)
                  "evaluation": EVALUATION, "excluded": [EXCLUDED], "steps": [{"excluded": "node_linear",
                  "added_error": 0.41, "failing": 1}], "latency": [LATENCY]}],
  "chosen": 0 | null,                                 (index into candidates)
  "excluded": [EXCLUDED],                             (of the chosen candidate)
  EXCLUDED = {"node", "op_type", "module", "module_class", "source", "reason": "--exclude" | "auto",
              "added_error": 0.41 | null, "cost_us": {"1": 0.8, "64": 3.1} | null}
  EVALUATION = {"passed": true, "segments": [SEGMENT], "aggregate": [SEGMENT], "failing": [CHECK]}
  SEGMENT = {"provider": "cpu", "segment": "tail", "rows": 200,
             "metrics": {"agreement@0.5": {"row": 0.97, "batch": 0.96, "value": 0.96}, ...},
             "checks": [CHECK], "batch_dependence": null | {"max_abs": 0.01, "rows_changed": 12,
                                                          "decisions_changed": 3 | null}}   (null: the output makes no decision, e.g. an embedding)
  CHECK = {"provider", "segment", "metric", "limit", "direction", "value", "aggregate", "passed"}
  LATENCY = {"provider": "cpu", "batch_size": 1, "fp32": STATS, "int8": STATS, "speedup": 1.4,
             "fp32_per_s": .., "int8_per_s": ..}    (STATS as in bench)
  "size": {"fp32_bytes": .., "int8_bytes": .., "ratio": 2.4},
  "failures": ["cpu tail: agreement@0.5 0.675 below the budget >= 0.97 (aggregate 0.956)"],
  "notes": ["..."], "versions": {...}, "duration_s": 4.2,
  "memory": {"weights_bytes", "peak_rss_bytes", "peak_source", "peak_over_weights", "before_model_bytes", "added_over_weights", "preflight"} (onnxtax.core.memory)
}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxtax.core.report import Verdict
from onnxtax.quantize.graph import BuildSettings, NodeOrigin
from onnxtax.quantize.segments import Budget, Evaluation, Segment


SCHEMA = "onnxtax.quantize/1"


@dataclass
class Excluded:
    origin: NodeOrigin
    reason: str  # "--exclude" | "auto"
    added_error: float | None = None
    cost_us: dict[int, float] | None = None  # batch size -> p50 µs slower than with the node quantized

    def to_dict(self) -> dict:
        return {**self.origin.to_dict(), "reason": self.reason, "added_error": self.added_error,
                "cost_us": {str(k): v for k, v in self.cost_us.items()} if self.cost_us is not None else None}


@dataclass
class Latency:
    provider: str
    batch_size: int
    fp32: Any  # bench.LatencyStats
    int8: Any

    @property
    def speedup(self) -> float:
        return self.fp32.p50_ms / self.int8.p50_ms

    def to_dict(self) -> dict:
        return {"provider": self.provider, "batch_size": self.batch_size, "fp32": self.fp32.to_dict(),
                "int8": self.int8.to_dict(), "speedup": self.speedup,
                "fp32_per_s": self.batch_size / (self.fp32.mean_ms / 1e3),
                "int8_per_s": self.batch_size / (self.int8.mean_ms / 1e3)}


@dataclass
class Candidate:
    settings: BuildSettings
    path: Path | None = None
    evaluation: Evaluation | None = None
    excluded: list[Excluded] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    latency: list[Latency] = field(default_factory=list)
    size_bytes: int | None = None
    error: str | None = None
    exclusion_cost_us: dict[int, float] | None = None  # batch -> p50 µs over the build with nothing kept in FP32

    speed_failures: list[str] = field(default_factory=list)  # --min-speedup not met

    @property
    def passed(self) -> bool:
        return (self.error is None and self.evaluation is not None and self.evaluation.passed
                and not self.speed_failures)

    @property
    def label(self) -> str:
        s = self.settings
        text = "dynamic" if s.mode == "dynamic" else f"static {s.format} {s.calibration_method}"
        return text + (" per-channel" if s.per_channel else "") + (
            f" ({len(s.excluded)} node{'s' if len(s.excluded) != 1 else ''} FP32)" if s.excluded else "")

    def to_dict(self) -> dict:
        return {"settings": self.settings.to_dict(), "label": self.label, "passed": self.passed, "error": self.error,
                "size_bytes": self.size_bytes, "speed_failures": list(self.speed_failures),
                "evaluation": self.evaluation.to_dict() if self.evaluation else None,
                "excluded": [e.to_dict() for e in self.excluded], "steps": list(self.steps),
                "latency": [lat.to_dict() for lat in self.latency],
                "exclusion_cost_us": {str(k): v for k, v in self.exclusion_cost_us.items()}
                if self.exclusion_cost_us is not None else None}


@dataclass
class QuantizeReport(Verdict):
    """The verdict of one `quantize_model` run; truthy when a build met every budget (and was written)."""

    source: dict
    output: str
    output_name: str = ""
    settings: dict = field(default_factory=dict)
    segments: list[Segment] = field(default_factory=list)
    calibration: list[dict] = field(default_factory=list)
    budgets: list[Budget] = field(default_factory=list)
    fp32: Evaluation | None = None
    candidates: list[Candidate] = field(default_factory=list)
    chosen: int | None = None
    written: bool = False
    problems: list[str] = field(default_factory=list)  # not tied to a budget (a build ORT could not make)
    notes: list[str] = field(default_factory=list)
    versions: dict = field(default_factory=dict)
    duration_s: float = 0.0
    memory: Any = None  # onnxtax.core.memory.MemoryRecord

    @property
    def passed(self) -> bool:  # type: ignore[override]
        return self.chosen is not None

    @property
    def best(self) -> Candidate | None:
        """The chosen build, else the one closest to passing (fewest failing checks)."""
        if self.chosen is not None:
            return self.candidates[self.chosen]
        built = [c for c in self.candidates if c.evaluation is not None]
        return min(built, key=lambda c: len(c.evaluation.failing), default=None)  # type: ignore[union-attr]

    @property
    def failures(self) -> list[str]:
        if self.passed:
            return []
        out = list(self.problems)
        for c in self.candidates:
            if c.evaluation is not None:
                out += [f"{c.label}: {chk.line()}" for chk in c.evaluation.failing]
            out += [f"{c.label}: {line}" for line in c.speed_failures]
        return out

    @property
    def size(self) -> dict:
        best = self.best
        fp32 = self.source.get("size_bytes")
        int8 = best.size_bytes if best else None
        return {"fp32_bytes": fp32, "int8_bytes": int8, "ratio": (fp32 / int8) if fp32 and int8 else None}

    def to_dict(self) -> dict:
        best = self.best
        return {
            "schema": SCHEMA, "passed": self.passed, "exit_code": self.exit_code, "written": self.written,
            "source": dict(self.source), "output": self.output, "output_name": self.output_name,
            "settings": dict(self.settings), "segments": [s.to_dict() for s in self.segments],
            "calibration": list(self.calibration), "budgets": [b.to_dict() for b in self.budgets],
            "fp32": self.fp32.to_dict() if self.fp32 else None,
            "candidates": [c.to_dict() for c in self.candidates], "chosen": self.chosen,
            "excluded": [e.to_dict() for e in best.excluded] if best else [],
            "size": self.size, "failures": self.failures, "notes": list(self.notes),
            "versions": dict(self.versions), "duration_s": self.duration_s,
            "memory": self.memory.to_dict() if self.memory else None,
        }
