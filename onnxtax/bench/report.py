"""The report of one benchmark: per path and batch size, with cold start, sweep, profile and gates.

JSON schema (`BenchReport.to_dict()`, schema_version 1; keys stable, times in ms
unless the key says otherwise):
{
  "schema_version": 1, "passed": true,
  "model": {"spec": "m.py:Net" | null, "class_name": "Net" | null, "onnx": "m.onnx"},
  "inputs": [{"name": "x", "dims": ["batch", 128], "dtype": "float32"}],
  "input_source": "arguments" | "manifest" | "onnx-graph",
  "settings": {"batch_axis": "batch" | null, "batch_sizes": [1, 8, 64], "dims": {"seq": 16},
               "threads": 1 | null, "torch_threads": 1, "opt_level": "all", "warmup": 20,
               "min_time_s": 1.0, "rounds": 10, "timer": "time.perf_counter_ns", "gc_disabled": true,
               "interleaved": "ABBA blocks per batch size", "seed": 0},
  "paths": [{"id": "eager", "kind": "torch-eager", "call": "inference_mode", "provider": null,
             "options": {}, "threads": 1, "opt_level": null, "device": "cpu", "placement": null,
             "status": "measured", "reason": null},
            {"id": "ort:cpu", "kind": "onnxruntime", "call": "iobinding", "provider": "CPUExecutionProvider",
             "options": {}, "threads": 1, "opt_level": "all", "device": "cpu",
             "placement": {"total_nodes": 3, "on_provider": 3, "fallback": 0, "fallback_op_types": {}},
             "status": "measured" | "failed" | "error", "reason": null | "ort:cpu failed at batch size 64: ..."}],
     (a path whose session did not load is "error"; one that failed to run at a batch size is "failed"
      and is left out of that and later batch sizes; either fails the report: exit 1)
  "skipped_providers": ["cuda"],
  "batches": [{"batch_size": 1, "shapes": {"x": [1, 128]},
               "latency": {"eager": STATS, "ort:cpu": STATS, "harness": STATS},
               "call_path": {"ort:cpu": "iobinding"},
               "throughput_per_s": {"eager": 20000.0, "ort:cpu": 120000.0},
               "speedup": {"ort:cpu": 6.0},
               "harness_share": {"eager": 0.002, "ort:cpu": 0.015}}],
     STATS = {"iterations": 1234, "total_s": 1.0, "p50_ms": .., "p90_ms": .., "p99_ms": ..,
              "min_ms": .., "max_ms": .., "mean_ms": ..}
  "harness_overhead_ms": {"p50": 0.00008, "p99": 0.0001},   (worst over batch sizes)
  "cold_start": {"measured": true, "reason": null, "runs": 3, "paths": {
        "eager": {"measured": true, "reason": null, "runs": 3,
                  "first_result_s": SPREAD, "interpreter_s": SPREAD, "import_s": SPREAD,
                  "load_s": SPREAD, "predict_s": SPREAD, "peak_rss_mb": SPREAD, "rss_source": "VmHWM"},
        "ort:cpu": {...}}},
     SPREAD = {"min": .., "median": .., "max": .., "values": [..]}
  "sweep": null | {"batch_sizes": [1, 8], "opt_levels": [...], "threads": [1, 2],
        "results": [{"path": "ort:cpu", "opt_level": "all", "threads": 1, "batch_size": 1, "latency": STATS}],
        "configured": {"opt_level": "all", "threads": 1} | null,   (the main measurement's setting)
        "best": {"ort:cpu": {"opt_level": "all", "threads": 1, "geomean_vs_best": 1.02,
                             "speedup_vs_configured": 1.0 | null,
                             "by_batch": {"1": {"opt_level": "all", "threads": 1, "p50_ms": ..}}}}},
  "profile": null | [{"path": "ort:cpu", "batch_size": 1, "file": "prof/ort-cpu-b1_....json", "runs": 200,
        "run_mean_us": 9.1, "node_mean_us": 6.2,
        "top_ops": [{"op_type": "FusedGemm", "provider": "CPUExecutionProvider", "calls": 600,
                     "total_us": 1100.0, "mean_us": 1.8, "percent": 88.0}]}],
  "gates": [{"gate": "max_latency_ms", "key": "p99", "path": "ort:cpu", "batch_size": 1,
             "limit": 5.0, "value": 0.012, "passed": true, "message": "..."}],
  "failures": ["ort:cpu failed at batch size 64: ..."],   (paths not measured; empty when all were)
  "host": {... report.host_facts() ...},
  "duration_s": 12.3
}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from onnxtax.bench.cold_start import ColdStart
from onnxtax.bench.timing import EAGER, HARNESS, LatencyStats, PathInfo
from onnxtax.bench.tuning import ProfileResult, SweepResult
from onnxtax.core.report import Verdict
from onnxtax.core.specs import InputSpec


SCHEMA_VERSION = 2  # 2: input_source labels shared with parity; per-path status and reason; failures

GATE_KEYS = ("p50", "p90", "p99", "max")

PERCENTILE_KEYS = ("p50", "p90", "p99", "min", "max", "mean")


@dataclass
class BatchResult:
    batch_size: int
    shapes: dict[str, list[int]]
    latency: dict[str, LatencyStats]  # path id -> stats, "harness" included
    call_path: dict[str, str] = field(default_factory=dict)  # ORT path id -> call path used

    @property
    def ort_paths(self) -> list[str]:
        return [p for p in self.latency if p not in (EAGER, HARNESS)]

    def throughput(self, path: str) -> float:
        return self.batch_size / (self.latency[path].mean_ms / 1e3)

    def speedup(self, path: str) -> float | None:
        """Eager p50 / ORT p50: the Python tax at this batch size."""
        if EAGER not in self.latency:
            return None
        return self.latency[EAGER].p50_ms / self.latency[path].p50_ms

    def harness_share(self, path: str) -> float:
        return self.latency[HARNESS].p50_ms / self.latency[path].p50_ms

    def to_dict(self) -> dict:
        timed = [p for p in self.latency if p != HARNESS]
        return {
            "batch_size": self.batch_size,
            "shapes": self.shapes,
            "latency": {p: s.to_dict() for p, s in self.latency.items()},
            "call_path": dict(self.call_path),
            "throughput_per_s": {p: self.throughput(p) for p in timed},
            "speedup": {p: self.speedup(p) for p in self.ort_paths} if EAGER in self.latency else {},
            "harness_share": {p: self.harness_share(p) for p in timed},
        }


@dataclass
class GateResult:
    gate: str  # "max_latency_ms" | "min_speedup"
    key: str  # "p99", "p50@1", "eager/ort p50"
    path: str
    batch_size: int
    limit: float
    value: float
    passed: bool

    @property
    def message(self) -> str:
        if self.gate == "max_latency_ms":
            op = "<=" if self.passed else ">"
            return (f"{self.path} batch {self.batch_size}: {self.key.split('@')[0]} {self.value:.4g} ms "
                    f"{op} limit {self.limit:g} ms")
        op = ">=" if self.passed else "<"
        return f"{self.path} batch {self.batch_size}: speedup {self.value:.3g}x {op} required {self.limit:g}x"

    def to_dict(self) -> dict:
        return {"gate": self.gate, "key": self.key, "path": self.path, "batch_size": self.batch_size,
                "limit": self.limit, "value": self.value, "passed": self.passed, "message": self.message}


@dataclass
class BenchReport(Verdict):
    """Everything one `run_bench` measured. Truthy when every gate passed (no gates: True)."""

    onnx: str
    spec: str | None
    class_name: str | None
    inputs: list[InputSpec]
    input_source: str
    settings: dict
    paths: list[PathInfo]
    skipped_providers: list[str]
    batches: list[BatchResult]
    cold_start: dict[str, ColdStart] = field(default_factory=dict)
    cold_start_reason: str | None = None  # why cold start was not measured at all
    cold_start_runs: int = 0
    sweep: SweepResult | None = None
    profile: list[ProfileResult] | None = None
    gates: list[GateResult] = field(default_factory=list)
    host: dict = field(default_factory=dict)
    duration_s: float = 0.0
    memory: Any = None  # onnxtax.core.memory.MemoryRecord of this process (cold starts run in their own)

    @property
    def failures(self) -> list[str]:
        """Paths that could not be measured: a finding about the model or a provider."""
        return [p.reason or f"{p.id} {p.status}" for p in self.paths if p.status != "measured"]

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates) and not self.failures

    @property
    def failed_gates(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]

    @property
    def ort_paths(self) -> list[str]:
        return [p.id for p in self.paths if p.kind == "onnxruntime"]

    def harness_overhead_ms(self) -> dict[str, float]:
        if not self.batches:
            return {}
        return {"p50": max(b.latency[HARNESS].p50_ms for b in self.batches),
                "p99": max(b.latency[HARNESS].p99_ms for b in self.batches)}

    def to_dict(self) -> dict:
        from onnxtax.core.report import jsonable

        return jsonable({
            "schema_version": SCHEMA_VERSION,
            "passed": self.passed,
            "model": {"spec": self.spec, "class_name": self.class_name, "onnx": self.onnx},
            "inputs": [s.to_dict() for s in self.inputs],
            "input_source": self.input_source,
            "settings": self.settings,
            "paths": [p.to_dict() for p in self.paths],
            "skipped_providers": list(self.skipped_providers),
            "batches": [b.to_dict() for b in self.batches],
            "harness_overhead_ms": self.harness_overhead_ms(),
            "cold_start": {"measured": bool(self.cold_start) and any(c.measured for c in self.cold_start.values()),
                           "reason": self.cold_start_reason, "runs": self.cold_start_runs,
                           "paths": {k: v.to_dict() for k, v in self.cold_start.items()}},
            "sweep": self.sweep.to_dict() if self.sweep else None,
            "profile": [p.to_dict() for p in self.profile] if self.profile is not None else None,
            "gates": [g.to_dict() for g in self.gates],
            "failures": self.failures,
            "host": self.host,
            "duration_s": self.duration_s,
            "memory": self.memory.to_dict() if self.memory else None,
        })

    def summary(self) -> dict:
        """The compact record `--record` stores in the manifest (no raw samples)."""
        import datetime as _dt

        batches = []
        for b in self.batches:
            entry: dict[str, Any] = {"batch_size": b.batch_size}
            for p in b.latency:
                if p == HARNESS:
                    continue
                s = b.latency[p]
                entry[p] = {"p50_ms": s.p50_ms, "p99_ms": s.p99_ms, "throughput_per_s": b.throughput(p)}
            if EAGER in b.latency:
                entry["speedup"] = {p: b.speedup(p) for p in b.ort_paths}
            batches.append(entry)
        cold = {k: {"first_result_s": v.first_result_s.median, "peak_rss_mb": v.peak_rss_mb.median}
                for k, v in self.cold_start.items() if v.measured and v.first_result_s and v.peak_rss_mb}
        host = self.host or {}
        return {
            "schema_version": SCHEMA_VERSION,
            "measured_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "passed": self.passed,
            "host": {k: host.get(k) for k in ("hostname", "platform", "cpu", "cpu_count")},
            "versions": host.get("versions", {}),
            "settings": {k: self.settings.get(k) for k in ("batch_axis", "threads", "opt_level", "min_time_s")},
            "call_path": {p.id: p.call for p in self.paths},
            "harness_overhead_ms": self.harness_overhead_ms(),
            "batches": batches,
            "cold_start": cold,
            "best_session_options": self.sweep.best() if self.sweep else None,
            "gates": [g.to_dict() for g in self.gates],
        }
