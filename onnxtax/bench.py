"""The Python tax, measured: PyTorch eager vs ONNX Runtime per provider, side by side
in one run, on the same inputs and the same number of threads.

What is measured, and how (the choices a release gate depends on):

- Latency per path and batch size: every call timed alone with `time.perf_counter_ns`,
  after `warmup` untimed-for-the-report calls (they also calibrate block sizes). Inputs
  are built once, before timing. The paths are interleaved in rounds of blocks
  (A B C, then C B A, ...; 10 rounds) so that machine drift hits every path alike.
  Each path gets at least `min_time` seconds of measured calls. The garbage collector
  is off during the timed blocks.
- PyTorch eager: `module(*tensors)` with `torch.inference_mode()` entered once per block
  (the best case for eager). ONNX Runtime: `session.run_with_iobinding(binding)` with
  input and output OrtValues allocated once (call path "iobinding"); output shapes are
  learnt from one `session.run`. When outputs cannot be pre-allocated (their shape
  changes from call to call) ORT allocates them: call path "iobinding-ort-outputs".
- Harness overhead: an empty function timed through the same loop ("harness" path),
  reported, never subtracted.
- Threads: `threads=1` by default, for torch (`torch.set_num_threads`, restored
  afterwards) and ORT (`intra_op_num_threads`, `inter_op_num_threads=1`) alike: single-
  stream latency, reproducible, comparable with a one-worker-per-core server.
  `threads=None` keeps each runtime's own default (reported as it is).
- Throughput (samples/s) = batch size / mean latency: one call at a time, back to back.
- Python tax (speedup) = eager p50 / ORT p50, per batch size and provider.
- Batch axis: the dynamic axis named `batch` if an input has one, else the first dynamic
  axis of the first input that has one. Other dynamic axes take their `dims` value or
  the export size recorded in the manifest (`dynamic_axes[sym].export_size`).
- Inputs: `inputs` if given, else the manifest beside the model, else the ONNX graph.
- Cold start: fresh interpreters (`sys.executable -c`, see bench_child), interleaved
  torch / ORT, `cold_start_runs` each: time from spawn to the first result of
  "import torch + build the model from its spec + predict once" vs
  "import onnxruntime + load the .onnx + predict once", and the child's peak RSS.
- Gates (report truthiness): `max_latency_ms={"p99": 5}` must hold for every ORT path at
  every batch size (`"p99@1"` limits one batch size); `min_speedup=X` must hold for every
  ORT path at every batch size.

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

import gc
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from onnxtax import defaults
from onnxtax.errors import CheckFailed, InputSpecError, OnnxtaxError
from onnxtax.inputs import ResolvedInputs
from onnxtax.progress import Progress
from onnxtax.report import Verdict
from onnxtax.specs import DTYPES, InputSpec, SampleRecipe, ValueRange, concrete_shape, make_inputs, symbols_of
from onnxtax.defaults import BENCH_COLD_START_RUNS as DEFAULT_COLD_START_RUNS
from onnxtax.defaults import BENCH_MAX_SAMPLES as MAX_SAMPLES
from onnxtax.defaults import BENCH_MIN_TIME as DEFAULT_MIN_TIME
from onnxtax.defaults import BENCH_THREADS as DEFAULT_THREADS
from onnxtax.defaults import BENCH_WARMUP as DEFAULT_WARMUP

SCHEMA_VERSION = 2  # 2: input_source labels shared with parity; per-path status and reason; failures
ROUNDS = 10  # interleaved blocks per path and batch size
MAX_EXTRA_ROUNDS = 10  # when the warm-up under-estimated the call time
HARNESS_TIME = 0.2  # seconds of empty calls per batch size (capped by min_time)
PROFILE_RUNS = 200
BIND_CHECK_RUNS = 5  # calls that must reuse the pre-allocated outputs before they are trusted
TOP_OPS = 10
COLD_START_TIMEOUT = 600

PathStatus = Literal["measured", "failed", "error"]
EAGER = "eager"
HARNESS = "harness"
GATE_KEYS = ("p50", "p90", "p99", "max")
PERCENTILE_KEYS = ("p50", "p90", "p99", "min", "max", "mean")

# Where pre-allocated OrtValues live for providers that compute off the host.
_DEVICE_OF = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda",
              "NvTensorRTRTXExecutionProvider": "cuda"}



# --------------------------------------------------------------------------- results


@dataclass
class LatencyStats:
    """Per-call latency of one path at one batch size."""

    iterations: int
    total_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    mean_ms: float

    @classmethod
    def from_ns(cls, samples: list[int]) -> "LatencyStats":
        import numpy as np

        arr = np.asarray(samples, dtype=np.int64)
        p50, p90, p99 = np.percentile(arr, [50, 90, 99])
        return cls(int(arr.size), float(arr.sum()) / 1e9, float(p50) / 1e6, float(p90) / 1e6, float(p99) / 1e6,
                   float(arr.min()) / 1e6, float(arr.max()) / 1e6, float(arr.mean()) / 1e6)

    def get(self, key: str) -> float:
        """`p50`, `p90`, `p99`, `min`, `max` or `mean`, in ms."""
        return float(getattr(self, f"{key}_ms"))

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Spread:
    """Several runs of a noisy measurement: never a single figure."""

    values: list[float]

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    @property
    def median(self) -> float:
        s = sorted(self.values)
        mid = len(s) // 2
        return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2

    def to_dict(self) -> dict:
        return {"min": self.min, "median": self.median, "max": self.max, "values": list(self.values)}


@dataclass
class PathInfo:
    """One thing being timed: eager PyTorch, or ORT on one provider."""

    id: str
    kind: str  # "torch-eager" | "onnxruntime"
    call: str  # "inference_mode" | "iobinding" | "iobinding-ort-outputs"
    provider: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    threads: int | None = None
    opt_level: str | None = None
    device: str = "cpu"
    placement: dict | None = None
    status: PathStatus = "measured"
    reason: str | None = None  # why it was not (fully) measured

    def to_dict(self) -> dict:
        return dict(self.__dict__)


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
class ColdStart:
    """Fresh-process start-up of one path; `measured=False` says why not."""

    path: str
    measured: bool
    reason: str | None = None
    first_result_s: Spread | None = None
    interpreter_s: Spread | None = None
    import_s: Spread | None = None
    load_s: Spread | None = None
    predict_s: Spread | None = None
    peak_rss_mb: Spread | None = None
    rss_source: str | None = None

    @property
    def runs(self) -> int:
        return len(self.first_result_s.values) if self.first_result_s else 0

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"measured": self.measured, "reason": self.reason, "runs": self.runs}
        for key in ("first_result_s", "interpreter_s", "import_s", "load_s", "predict_s", "peak_rss_mb"):
            value = getattr(self, key)
            out[key] = value.to_dict() if value else None
        out["rss_source"] = self.rss_source
        return out


@dataclass
class SweepEntry:
    path: str
    opt_level: str
    threads: int
    batch_size: int
    latency: LatencyStats

    def to_dict(self) -> dict:
        return {"path": self.path, "opt_level": self.opt_level, "threads": self.threads,
                "batch_size": self.batch_size, "latency": self.latency.to_dict()}


@dataclass
class SweepResult:
    """Graph optimisation levels x thread counts, per provider; best = lowest p50."""

    batch_sizes: list[int]
    opt_levels: list[str]
    threads: list[int]
    results: list[SweepEntry] = field(default_factory=list)
    configured: tuple[str, int] | None = None  # (opt level, threads) of the main measurement, if in the grid

    def best(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for path in dict.fromkeys(e.path for e in self.results):
            entries = [e for e in self.results if e.path == path]
            by_batch: dict[str, dict] = {}
            floor: dict[int, float] = {}
            for bs in self.batch_sizes:
                here = [e for e in entries if e.batch_size == bs]
                if not here:
                    continue
                top = min(here, key=lambda e: e.latency.p50_ms)
                floor[bs] = top.latency.p50_ms
                by_batch[str(bs)] = {"opt_level": top.opt_level, "threads": top.threads,
                                     "p50_ms": top.latency.p50_ms}
            # one setting for all batch sizes: the lowest geometric mean of p50 / best p50
            scores: dict[tuple[str, int], float] = {}
            for e in entries:
                scores.setdefault((e.opt_level, e.threads), 0.0)
                scores[(e.opt_level, e.threads)] += math.log(e.latency.p50_ms / floor[e.batch_size])
            (level, threads), score = min(scores.items(), key=lambda kv: kv[1])
            n = max(1, len(floor))
            # how much the best setting gains over the one measured in the main table (> 1: faster)
            gain = (math.exp((scores[self.configured] - score) / n)
                    if self.configured is not None and self.configured in scores else None)
            out[path] = {"opt_level": level, "threads": threads, "geomean_vs_best": math.exp(score / n),
                         "speedup_vs_configured": gain, "by_batch": by_batch}
        return out

    def to_dict(self) -> dict:
        return {"batch_sizes": self.batch_sizes, "opt_levels": self.opt_levels, "threads": self.threads,
                "configured": ({"opt_level": self.configured[0], "threads": self.configured[1]}
                               if self.configured else None),
                "results": [e.to_dict() for e in self.results], "best": self.best()}


@dataclass
class OpTime:
    op_type: str
    provider: str
    calls: int
    total_us: float
    percent: float

    @property
    def mean_us(self) -> float:
        return self.total_us / self.calls if self.calls else 0.0

    def to_dict(self) -> dict:
        return {"op_type": self.op_type, "provider": self.provider, "calls": self.calls,
                "total_us": self.total_us, "mean_us": self.mean_us, "percent": self.percent}


@dataclass
class ProfileResult:
    """ORT's own profile of a separate session (profiling slows the run it records)."""

    path: str
    batch_size: int
    file: str
    runs: int
    run_mean_us: float
    node_mean_us: float
    top_ops: list[OpTime]

    def to_dict(self) -> dict:
        return {"path": self.path, "batch_size": self.batch_size, "file": self.file, "runs": self.runs,
                "run_mean_us": self.run_mean_us, "node_mean_us": self.node_mean_us,
                "top_ops": [o.to_dict() for o in self.top_ops]}


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
        from onnxtax.report import jsonable

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


# --------------------------------------------------------------------------- parsing


def parse_batch_sizes(text: str) -> list[int]:
    """`1,8,64` -> [1, 8, 64]."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not re.fullmatch(r"\d+", part) or int(part) < 1:
            raise InputSpecError(f"--batch-sizes '{text}': '{part}' is not a positive integer",
                                 "e.g. --batch-sizes 1,8,64")
        if int(part) not in out:
            out.append(int(part))
    return out


def parse_latency_gates(texts: list[str] | tuple[str, ...]) -> dict[str, float]:
    """`P99=5` (every batch size) or `p50@1=0.05` (batch size 1 only) -> {"p99": 5.0}."""
    out: dict[str, float] = {}
    for text in texts:
        key, sep, value = text.partition("=")
        key = key.strip().lower()
        m = re.fullmatch(r"(p50|p90|p99|max)(?:@(\d+))?", key)
        try:
            limit = float(value)
        except ValueError:
            limit = -1.0
        if not sep or not m or not limit > 0 or not math.isfinite(limit):
            raise InputSpecError(f"--max-latency-ms '{text}' needs PERCENTILE[@BATCH]=MS with MS > 0",
                                 f"percentiles: {', '.join(GATE_KEYS)}; e.g. --max-latency-ms p99=5 "
                                 "or --max-latency-ms p50@1=0.05")
        out[key] = limit
    return out


def _check_gates(max_latency_ms: dict[str, float] | None, min_speedup: float | None,
                 batch_sizes: list[int], have_eager: bool) -> dict[str, float]:
    gates = {}
    for key, limit in (max_latency_ms or {}).items():
        norm = key.strip().lower()
        m = re.fullmatch(r"(p50|p90|p99|max)(?:@(\d+))?", norm)
        if not m or not (isinstance(limit, (int, float)) and limit > 0):
            raise InputSpecError(f"latency gate '{key}={limit}' needs PERCENTILE[@BATCH]=MS with MS > 0",
                                 f"percentiles: {', '.join(GATE_KEYS)}")
        if m.group(2) and int(m.group(2)) not in batch_sizes:
            raise InputSpecError(f"latency gate '{key}' names batch size {m.group(2)}, which is not benchmarked",
                                 f"benchmarked batch sizes: {', '.join(map(str, batch_sizes))}")
        gates[norm] = float(limit)
    if min_speedup is not None:
        if not min_speedup > 0:
            raise InputSpecError(f"--min-speedup {min_speedup} must be > 0", "e.g. --min-speedup 2")
        if not have_eager:
            raise InputSpecError("--min-speedup needs the PyTorch model to compare with",
                                 "give the model SPEC as well as the .onnx file")
    return gates


# --------------------------------------------------------------------------- inputs


def batch_axis_of(specs: list[InputSpec]) -> str | None:
    """`batch` if any input names it, else the first dynamic axis of the first input with one."""
    symbols = symbols_of(specs)
    if "batch" in symbols:
        return "batch"
    for spec in specs:
        if spec.symbols:
            return spec.symbols[0]
    return None


def _fixed_sizes(specs: list[InputSpec], batch_axis: str | None, dims: dict[str, list[int]],
                 recorded: dict[str, int]) -> dict[str, int]:
    """Size of every dynamic axis except the batch axis."""
    known = symbols_of(specs)
    for name in dims:
        if name not in known:
            raise InputSpecError(f"--dim '{name}' names no dynamic axis",
                                 f"dynamic axes: {', '.join(known)}" if known else "the inputs have no dynamic axis")
    sizes: dict[str, int] = {}
    for sym in known:
        if sym == batch_axis:
            continue
        if sym in dims:
            if len(dims[sym]) != 1:
                raise InputSpecError(f"--dim {sym}= gives several values; only the batch axis "
                                     f"({batch_axis}) is swept", f"e.g. --dim {sym}={dims[sym][0]}")
            sizes[sym] = dims[sym][0]
        elif sym in recorded:
            sizes[sym] = recorded[sym]
        else:
            raise InputSpecError(f"no size for dynamic axis '{sym}'",
                                 f"give one with --dim {sym}=N (the manifest records none)")
    return sizes


def _refuse_bfloat16(specs: list[InputSpec]) -> None:
    for spec in specs:
        if spec.dtype == "bfloat16":
            raise InputSpecError(f"input '{spec.name}' is bfloat16, which numpy cannot hold for ONNX Runtime",
                                 "benchmark a float32 or float16 export")


# --------------------------------------------------------------------------- timing


def _noop(*_args) -> None:
    return None


class _Timed:
    """A path being timed: `fn(*args)` per call; samples in ns."""

    def __init__(self, path: str, fn: Callable, args: tuple, target_s: float, context=None):
        self.path = path
        self.fn = fn
        self.args = args
        self.target_ns = int(target_s * 1e9)
        self.context = context  # factory of a context manager entered per block (inference_mode)
        self.samples: list[int] = []
        self.total_ns = 0
        self.per_call_ns = 1

    def block(self, n: int) -> None:
        fn, args = self.fn, self.args
        clock = time.perf_counter_ns
        out = self.samples
        append = out.append
        start = len(out)
        if self.context is not None:
            with self.context():
                for _ in range(n):
                    t0 = clock()
                    fn(*args)
                    append(clock() - t0)
        else:
            for _ in range(n):
                t0 = clock()
                fn(*args)
                append(clock() - t0)
        self.total_ns += sum(out[start:])

    def warm_up(self, n: int) -> None:
        before = len(self.samples)
        self.block(max(1, n))
        timings = sorted(self.samples[before:][1:] or self.samples[before:])
        self.per_call_ns = max(1, timings[len(timings) // 2])
        del self.samples[before:]
        self.total_ns = 0

    def done(self) -> bool:
        return self.total_ns >= self.target_ns or len(self.samples) >= MAX_SAMPLES

    def next_block(self, rounds_left: int) -> int:
        remaining = max(0, self.target_ns - self.total_ns)
        per_call = (self.total_ns / len(self.samples)) if self.samples else self.per_call_ns
        n = math.ceil(remaining / max(1, rounds_left) / max(per_call, 1.0))
        return int(max(1, min(n, MAX_SAMPLES // ROUNDS, MAX_SAMPLES - len(self.samples))))


class _PathFailed(Exception):
    def __init__(self, path: str, exc: BaseException):
        super().__init__(path)
        self.path = path
        self.exc = exc


def _measure(timed: list[_Timed], warmup: int) -> dict[str, LatencyStats]:
    """Warm every path, then interleave blocks (A B C / C B A ...) until each has its time."""
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    current = timed[0]
    try:
        for current in timed:
            current.warm_up(warmup)
        rounds = 0
        while True:
            order = timed if rounds % 2 == 0 else list(reversed(timed))
            for current in order:
                if rounds < ROUNDS or not current.done():
                    if len(current.samples) < MAX_SAMPLES:
                        current.block(current.next_block(max(1, ROUNDS - rounds)))
            rounds += 1
            if rounds >= ROUNDS and all(t.done() for t in timed):
                break
            if rounds >= ROUNDS + MAX_EXTRA_ROUNDS:
                break
    except Exception as exc:  # noqa: BLE001 - a call that worked once failed while being timed
        raise _PathFailed(current.path, exc) from exc
    finally:
        if gc_was_enabled:
            gc.enable()
    return {t.path: LatencyStats.from_ns(t.samples) for t in timed}


# --------------------------------------------------------------------------- ORT paths


@dataclass
class _OrtPath:
    info: PathInfo
    session: Any
    request: Any


def _bind(session, feeds: dict, device: str) -> tuple[Callable, tuple, str, list]:
    """I/O binding with pre-allocated input and output OrtValues. Returns the call to
    time as (function, args), the call path name, and the values to keep alive."""
    import onnxruntime as ort

    outputs = session.run(None, feeds)
    names = [o.name for o in session.get_outputs()]
    binding = session.io_binding()
    inputs = []
    for name, arr in feeds.items():
        value = ort.OrtValue.ortvalue_from_numpy(arr, device, 0)
        binding.bind_ortvalue_input(name, value)
        inputs.append(value)
    keep = list(inputs)
    for name, arr in zip(names, outputs):
        value = ort.OrtValue.ortvalue_from_shape_and_type(list(arr.shape), arr.dtype, device, 0)
        binding.bind_ortvalue_output(name, value)
        keep.append(value)
    try:
        for _ in range(BIND_CHECK_RUNS):
            session.run_with_iobinding(binding)
        return session.run_with_iobinding, (binding,), "iobinding", keep
    except Exception:  # noqa: BLE001 - an output whose shape varies per call cannot be pre-allocated
        pass
    # ORT keeps the outputs of the last run bound, so they must be unbound before every call
    binding = session.io_binding()
    for name, value in zip(feeds, inputs):
        binding.bind_ortvalue_input(name, value)
    args = (session.run_with_iobinding, binding, tuple(names), device)
    _rebind_outputs_and_run(*args)
    return _rebind_outputs_and_run, args, "iobinding-ort-outputs", inputs


def _rebind_outputs_and_run(run: Callable, binding, names: tuple[str, ...], device: str) -> None:
    for name in names:
        binding.bind_output(name, device)
    run(binding)


def _path_failed(path: str, batch: int, exc: BaseException) -> CheckFailed:
    """A path that cannot run at this batch size: a finding about the model (exit 1)."""
    from onnxtax.providers import ort_error_summary

    if path == EAGER:
        return CheckFailed(f"eager forward failed at batch size {batch}: {type(exc).__name__}: {exc}",
                           "check the --input shapes against the model")
    line, node = ort_error_summary(exc)
    where = f" (node {node})" if node else ""
    return CheckFailed(f"{path} failed at batch size {batch}: {line}{where}",
                       "run `onnxtax parity` at this batch size to see whether the export baked a size in")


# --------------------------------------------------------------------------- cold start


def _child_inputs(specs: list[InputSpec], sizes: dict[str, int], ranges: dict[str, ValueRange]) -> list[dict]:
    out = []
    for spec in specs:
        np_dtype = DTYPES[spec.dtype][0]
        kind = "bool" if spec.dtype == "bool" else ("int" if np_dtype.startswith(("int", "uint")) else "float")
        r = ranges.get(spec.name)
        out.append({"name": spec.name, "shape": list(concrete_shape(spec, sizes)), "kind": kind,
                    "numpy_dtype": np_dtype, "torch_dtype": DTYPES[spec.dtype][2],
                    "low": int(r.low) if r else 0, "high": int(r.high) if r else 10})
    return out


def _run_child(cfg: dict, env: dict | None) -> dict:
    from onnxtax.child import run_in_child

    result = run_in_child("onnxtax.bench_child:cold_start", cfg, timeout=COLD_START_TIMEOUT, env=env)
    if not result:
        kind = f"{result.error_type}: " if result.status == "error" and result.error_type else ""
        return {"error": f"{kind}{result.message}"}
    data = dict(result.value)
    data["stamps_ns"]["interpreter_ready"] = result.started_ns
    data["spawn_ns"] = result.spawn_ns
    return data


def _cold_start(spec: str | None, spec_reason: str | None, onnx_path: Path, ort_paths: list[_OrtPath],
                specs: list[InputSpec], sizes: dict[str, int], ranges: dict[str, ValueRange],
                threads: int | None, opt_level: str, runs: int, tick: Callable[[str], None]
                ) -> dict[str, ColdStart]:
    child_inputs = _child_inputs(specs, sizes, ranges)
    jobs: list[tuple[str, dict]] = []
    results: dict[str, ColdStart] = {}
    if spec is not None:
        jobs.append((EAGER, {"kind": "torch", "spec": spec, "threads": threads, "inputs": child_inputs}))
    elif spec_reason:
        results[EAGER] = ColdStart(EAGER, False, spec_reason)
    for p in ort_paths:
        jobs.append((p.info.id, {"kind": "ort", "onnx": str(onnx_path.resolve()), "provider": p.request.name,
                                 "provider_options": dict(_threaded(p.request, threads).options), "threads": threads,
                                 "opt_level": opt_level, "inputs": child_inputs}))
    env = dict(os.environ)
    target = (spec or "").rpartition(":")[0]
    if spec is not None and not (target.endswith(".py") or "/" in target or "\\" in target):
        # a `package.module:NAME` spec must resolve in the child as it did here
        env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    raw: dict[str, list[dict]] = {path: [] for path, _ in jobs}
    errors: dict[str, str] = {}
    for _ in range(runs):
        for path, cfg in jobs:  # interleaved: torch, ort, torch, ort ...
            if path in errors:
                continue
            tick(f"cold start: {path}")
            data = _run_child(cfg, env)
            if "error" in data:
                errors[path] = data["error"]
            else:
                raw[path].append(data)
    for path, _ in jobs:
        if path in errors:
            results[path] = ColdStart(path, False, f"the fresh process failed: {errors[path]}")
            continue
        def spread(a: str, b: str, rows=raw[path]) -> Spread:
            return Spread([(r["stamps_ns"][b] - (r["spawn_ns"] if a == "spawn" else r["stamps_ns"][a])) / 1e9
                           for r in rows])
        results[path] = ColdStart(
            path, True, None,
            first_result_s=spread("spawn", "first_result"),
            interpreter_s=spread("spawn", "interpreter_ready"),
            import_s=spread("import_start", "import_end"),
            load_s=spread("import_end", "load_end"),
            predict_s=spread("load_end", "first_result"),
            peak_rss_mb=Spread([r["peak_rss_kb"] / 1024 for r in raw[path]]),
            rss_source=raw[path][0]["rss_source"])
    return results


# --------------------------------------------------------------------------- profiling


def parse_profile(file: str | Path, last_runs: int | None = None, top: int = TOP_OPS
                  ) -> tuple[int, float, float, list[OpTime]]:
    """(runs, mean us per run, mean operator us per run, top operators) from an ORT
    profile JSON, counting only the last `last_runs` runs (the ones after the warm-up)."""
    events = json.loads(Path(file).read_text(encoding="utf-8"))
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    start_ts = -1
    if last_runs is not None and len(runs) > last_runs:
        before = runs[-last_runs - 1]
        start_ts = before["ts"] + before["dur"]
    kept_runs = [r for r in runs if r["ts"] > start_ts]
    per_op: dict[tuple[str, str], list[float]] = {}
    node_total = 0.0
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time") or e["ts"] <= start_ts:
            continue
        args = e.get("args", {})
        key = (args.get("op_name", "?"), args.get("provider", "?"))
        acc = per_op.setdefault(key, [0, 0.0])
        acc[0] += 1
        acc[1] += float(e.get("dur", 0))
        node_total += float(e.get("dur", 0))
    ops = [OpTime(op, prov, int(c), t, 100.0 * t / node_total if node_total else 0.0)
           for (op, prov), (c, t) in per_op.items()]
    ops.sort(key=lambda o: o.total_us, reverse=True)
    n = len(kept_runs)
    run_mean = sum(r["dur"] for r in kept_runs) / n if n else 0.0
    return n, run_mean, (node_total / n if n else 0.0), ops[:top]


# --------------------------------------------------------------------------- main


def _eager_model(model) -> tuple[Any, str | None, str | None, str | None]:
    """(nn.Module or None, spec string or None, class name, why cold start cannot rebuild it)."""
    if model is None:
        return None, None, None, "no PyTorch model given"
    from onnxtax.loading import resolve_model

    loaded = resolve_model(model)
    if not loaded.in_memory:
        return loaded.module, loaded.spec, loaded.class_name, None
    loaded.module.eval()
    return loaded.module, None, loaded.class_name, ("the model was given as an in-memory nn.Module: a fresh "
                                                    "process can only rebuild it from a SPEC string")


def _sweep_threads(threads: int | None) -> list[int]:
    cpus = os.cpu_count() or 1
    values = {1, min(2, cpus), cpus}
    if threads:
        values.add(threads)
    return sorted(values)


def run_bench(model, onnx_path: str | Path, inputs: list[InputSpec] | list[str] | ResolvedInputs | None = None, *,
              batch_sizes: list[int] | tuple[int, ...] | None = None,
              dims: dict[str, list[int] | int] | None = None,
              providers: list[str] | tuple[str, ...] | None = None,
              skip_unavailable: bool = False,
              threads: int | None = DEFAULT_THREADS,
              opt_level: str = defaults.OPT_LEVEL,
              warmup: int = DEFAULT_WARMUP,
              min_time: float = DEFAULT_MIN_TIME,
              cold_start: bool = True,
              cold_start_runs: int = DEFAULT_COLD_START_RUNS,
              sweep: bool = False,
              profile_dir: str | Path | None = None,
              max_latency_ms: dict[str, float] | None = None,
              min_speedup: float | None = None,
              ranges: dict[str, ValueRange] | None = None,
              seed: int = 0,
              progress: Progress | None = None) -> BenchReport:
    """Benchmark `model` (SPEC string, LoadedModel, nn.Module, or None for ORT only)
    against `onnx_path` on each provider. See the module docstring for what is measured.

    `batch_sizes` default (1, 8, 64); `dims` sizes the other dynamic axes (a list value
    for the batch axis replaces `batch_sizes`). `providers` as on the command line
    (`cpu`, `openvino:device_type=CPU`); default every compute provider. Gates:
    `max_latency_ms` {"p99": 5, "p50@1": 0.05} and `min_speedup`."""
    from onnxtax.inputs import resolve_inputs
    from onnxtax.providers import OPT_LEVELS, open_session, placement_of, resolve_providers
    from onnxtax.report import host_facts

    started = time.monotonic()
    onnx_path = Path(onnx_path)
    if opt_level not in OPT_LEVELS:
        raise InputSpecError(f"unknown optimisation level '{opt_level}'", f"use one of: {', '.join(OPT_LEVELS)}")
    if warmup < 1:
        raise InputSpecError(f"--warmup {warmup}: at least 1 warm-up call is needed (it calibrates the blocks)",
                             "e.g. --warmup 20")
    if not min_time > 0:
        raise InputSpecError(f"--min-time {min_time} must be > 0", "e.g. --min-time 1")
    if threads is not None and threads < 1:
        raise InputSpecError(f"threads {threads} must be >= 1", "or None (--threads 0) for each runtime's default")
    if cold_start_runs < 1:
        raise InputSpecError(f"--cold-start-runs {cold_start_runs} must be >= 1",
                             "e.g. --cold-start-runs 3, or --no-cold-start")
    dims_lists = {k: (list(v) if isinstance(v, (list, tuple)) else [int(v)]) for k, v in (dims or {}).items()}

    resolved = resolve_inputs(onnx_path, inputs, ranges=ranges)
    specs, ranges = resolved.specs, resolved.ranges
    _refuse_bfloat16(specs)
    batch_axis = batch_axis_of(specs)
    if batch_axis is None:
        if batch_sizes:
            raise InputSpecError("the model has no dynamic axis, so --batch-sizes cannot vary the batch",
                                 "drop --batch-sizes, or export with a dynamic batch axis")
        first = specs[0].dims[0] if specs and specs[0].dims else 1
        sizes_list = [int(first) if isinstance(first, int) else 1]
    elif batch_axis in dims_lists:
        if batch_sizes:
            raise InputSpecError(f"the batch axis '{batch_axis}' is given by both --batch-sizes and --dim",
                                 "use one of them")
        sizes_list = list(dict.fromkeys(dims_lists.pop(batch_axis)))
    else:
        sizes_list = list(dict.fromkeys(int(b) for b in (batch_sizes or defaults.BENCH_BATCH_SIZES)))
    if any(b < 1 for b in sizes_list):
        raise InputSpecError(f"batch sizes {sizes_list} must be positive", "e.g. --batch-sizes 1,8,64")
    fixed = _fixed_sizes(specs, batch_axis, dims_lists, resolved.export_sizes)

    usable, skipped = resolve_providers(list(providers) if providers else None, skip_unavailable=skip_unavailable)
    if not usable:
        raise InputSpecError("no execution provider left to benchmark",
                             "drop --skip-unavailable or name a provider this host has")
    gates = _check_gates(max_latency_ms, min_speedup, sizes_list, model is not None)

    module, spec, class_name, cold_reason = _eager_model(model)
    if module is not None:
        from onnxtax.loading import check_inputs_match

        module = check_inputs_match(module, specs, spec or class_name or "the model")

    n_steps = ((cold_start_runs * (len(usable) + (1 if spec else 0))) if cold_start else 0) + len(sizes_list)
    if sweep:
        n_steps += len(sizes_list)
    if profile_dir is not None:
        n_steps += len(usable) * len(sizes_list)
    steps = [0]

    def tick(what: str) -> None:
        if progress:
            progress(what, steps[0], n_steps)
        steps[0] += 1

    # sessions first: a provider that cannot load the model is recorded before any timing
    ort_paths: list[_OrtPath] = []
    not_loaded: list[PathInfo] = []
    for req in usable:
        pinfo = PathInfo(f"ort:{req.label}", "onnxruntime", "iobinding", req.name,
                         dict(_threaded(req, threads).options), threads, opt_level, _DEVICE_OF.get(req.name, "cpu"))
        try:
            session = open_session(onnx_path, _threaded(req, threads), opt_level=opt_level, threads=threads)
        except CheckFailed as exc:
            pinfo.status, pinfo.reason = "error", exc.message
            not_loaded.append(pinfo)
            continue
        placement = placement_of(session, req.name)
        pinfo.placement = {"method": placement.method, "total_nodes": placement.total_nodes,
                           "on_provider": placement.on_provider, "fallback": placement.fallback_count,
                           "fallback_op_types": dict(placement.fallback_op_types)}
        ort_paths.append(_OrtPath(pinfo, session, req))

    recipe = SampleRecipe(seed, ranges)
    cold: dict[str, ColdStart] = {}
    cold_start_reason = None if cold_start else "not requested (--no-cold-start)"
    if cold_start:
        first_sizes = dict(fixed, **({batch_axis: sizes_list[0]} if batch_axis else {}))
        cold = _cold_start(spec, cold_reason, onnx_path, ort_paths, specs, first_sizes, ranges, threads,
                           opt_level, cold_start_runs, tick)

    torch = None
    torch_threads_before = None
    if module is not None:
        import torch

        torch_threads_before = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
    paths: list[PathInfo] = []
    if module is not None:
        paths.append(PathInfo(EAGER, "torch-eager", "inference_mode", None, {},
                              torch.get_num_threads(), None, "cpu", None))
    paths += [p.info for p in ort_paths] + not_loaded
    by_id = {p.id: p for p in paths}

    def fail(path_id: str, bs: int, exc: BaseException) -> None:
        info = by_id[path_id]
        info.status, info.reason = "failed", _path_failed(path_id, bs, exc).message

    batches: list[BatchResult] = []
    try:
        for bs in sizes_list:
            tick(f"batch {bs}")
            sizes = dict(fixed, **({batch_axis: bs} if batch_axis else {}))
            arrays = make_inputs(specs, sizes, recipe)
            feeds = resolved.feeds(arrays)
            timed: list[_Timed] = [_Timed(HARNESS, _noop, (None,), min(min_time, HARNESS_TIME))]
            call_path: dict[str, str] = {}
            keep_alive = []
            if module is not None and by_id[EAGER].status == "measured":
                from onnxtax.inputs import torch_tensors

                tensors = torch_tensors(specs, arrays)
                try:
                    with torch.inference_mode():
                        module(*tensors)
                    timed.append(_Timed(EAGER, module, tensors, min_time, context=torch.inference_mode))
                except Exception as exc:  # noqa: BLE001 - the user's forward()
                    fail(EAGER, bs, exc)
            for p in ort_paths:
                if p.info.status != "measured":
                    continue
                try:
                    fn, args, call, keep = _bind(p.session, feeds, p.info.device)
                except Exception as exc:  # noqa: BLE001 - ORT's pybind errors
                    fail(p.info.id, bs, exc)
                    continue
                keep_alive.append(keep)
                call_path[p.info.id] = call
                if call != "iobinding":
                    p.info.call = call
                timed.append(_Timed(p.info.id, fn, args, min_time))
            while len(timed) > 1:
                try:
                    latency = _measure(timed, warmup)
                except _PathFailed as failed:  # a call that worked once failed while timed: measure the rest
                    fail(failed.path, bs, failed.exc)
                    timed = [_Timed(t.path, t.fn, t.args, t.target_ns / 1e9, t.context) for t in timed
                             if t.path != failed.path]
                    continue
                batches.append(BatchResult(bs, {s.name: list(concrete_shape(s, sizes)) for s in specs},
                                           {t.path: latency[t.path] for t in timed},
                                           {k: v for k, v in call_path.items() if k in latency}))
                break
            del keep_alive
    finally:
        if torch is not None and torch_threads_before is not None:
            torch.set_num_threads(torch_threads_before)

    measured = [p for p in ort_paths if p.info.status == "measured"]
    sweep_result = None
    if sweep:
        sweep_result = _run_sweep(onnx_path, [p.request for p in measured], resolved, fixed, batch_axis,
                                  sizes_list, recipe, threads, opt_level, warmup, min_time, tick)

    profiles = None
    if profile_dir is not None:
        profiles = _run_profiles(Path(profile_dir), onnx_path, measured, resolved, fixed, batch_axis, sizes_list,
                                 recipe, threads, opt_level, warmup, tick)

    settings = {"batch_axis": batch_axis, "batch_sizes": sizes_list, "dims": fixed, "threads": threads,
                "torch_threads": paths[0].threads if module is not None else None, "opt_level": opt_level,
                "warmup": warmup, "min_time_s": min_time, "rounds": ROUNDS, "timer": "time.perf_counter_ns",
                "gc_disabled": True, "interleaved": "ABBA blocks per batch size", "seed": seed}
    report = BenchReport(str(onnx_path), spec, class_name, specs, resolved.source, settings, paths,
                         [r.label for r in skipped], batches, cold, cold_start_reason,
                         cold_start_runs if cold_start else 0, sweep_result, profiles)
    report.gates = _evaluate_gates(report, gates, min_speedup)
    report.host = host_facts()
    report.duration_s = time.monotonic() - started
    if progress:
        progress("done", n_steps, n_steps)
    return report


# Providers with their own inference thread pool, which ORT's intra_op_num_threads does not
# reach: measured here, OpenVINO (device_type=CPU) ran on every core with intra_op 1.
_OWN_THREAD_OPTION = {"OpenVINOExecutionProvider": "num_of_threads"}


def _threaded(req, threads: int | None):
    """The request with the provider's own thread option set to `threads` (unless the user
    set it), so every path runs on the thread count the report states."""
    from onnxtax.providers import ProviderRequest

    key = _OWN_THREAD_OPTION.get(req.name)
    if not threads or key is None or key in req.options:
        return req
    return ProviderRequest(req.name, {**req.options, key: str(threads)})


def time_onnx_models(models: dict[str, str | Path], request, feeds: dict, *, threads: int | None = DEFAULT_THREADS,
                     opt_level: str = "all", warmup: int = DEFAULT_WARMUP, min_time: float = DEFAULT_MIN_TIME
                     ) -> dict[str, LatencyStats]:
    """Several builds of one model (FP32 vs INT8) on one provider, timed by this harness: the
    same feeds through I/O binding, interleaved ABBA blocks, the same thread count. Keys of
    `models` are the path ids of the result. A build that cannot run raises CheckFailed."""
    from onnxtax.providers import open_session

    timed, keep_alive = [], []
    batch = next((int(v.shape[0]) for v in feeds.values() if getattr(v, "ndim", 0)), 1)
    for path_id, onnx_path in models.items():
        session = open_session(onnx_path, _threaded(request, threads), opt_level=opt_level, threads=threads,
                               record_placement=False)
        try:
            fn, args, _call, keep = _bind(session, feeds, _DEVICE_OF.get(request.name, "cpu"))
        except Exception as exc:  # noqa: BLE001 - ORT's pybind errors
            raise _path_failed(path_id, batch, exc) from exc
        keep_alive.append(keep)
        timed.append(_Timed(path_id, fn, args, min_time))
    try:
        return _measure(timed, warmup)
    except _PathFailed as failed:
        raise _path_failed(failed.path, batch, failed.exc) from failed.exc


def _run_sweep(onnx_path: Path, usable, resolved: ResolvedInputs, fixed, batch_axis, sizes_list, recipe, threads,
               opt_level, warmup, min_time, tick) -> SweepResult:
    from onnxtax.providers import OPT_LEVELS, ProviderRequest, open_session

    thread_counts = _sweep_threads(threads)
    result = SweepResult(list(sizes_list), list(OPT_LEVELS), thread_counts,
                         configured=(opt_level, threads) if threads else None)
    configs: list[tuple[str, str, int, Any, ProviderRequest]] = []
    for req in usable:
        for level in OPT_LEVELS:
            for n in thread_counts:
                session = open_session(onnx_path, _threaded(req, n), opt_level=level, threads=n,
                                       record_placement=False)
                configs.append((f"ort:{req.label}", level, n, session, req))
    for bs in sizes_list:
        tick(f"sweep: batch {bs}")
        sizes = dict(fixed, **({batch_axis: bs} if batch_axis else {}))
        feeds = resolved.feeds(make_inputs(resolved.specs, sizes, recipe))
        timed, keep_alive, meta = [], [], {}
        for i, (path, level, n, session, req) in enumerate(configs):
            try:
                fn, args, _, keep = _bind(session, feeds, _DEVICE_OF.get(req.name, "cpu"))
            except Exception as exc:  # noqa: BLE001
                raise _path_failed(f"{path} ({level}, {n} threads)", bs, exc) from exc
            keep_alive.append(keep)
            key = f"sweep{i}"
            meta[key] = (path, level, n)
            timed.append(_Timed(key, fn, args, min_time))
        try:
            latency = _measure(timed, warmup)
        except _PathFailed as failed:
            path, level, n = meta[failed.path]
            raise _path_failed(f"{path} ({level}, {n} threads)", bs, failed.exc) from failed.exc
        for key, (path, level, n) in meta.items():
            result.results.append(SweepEntry(path, level, n, bs, latency[key]))
    return result


def _run_profiles(profile_dir: Path, onnx_path: Path, ort_paths: list[_OrtPath], resolved: ResolvedInputs, fixed,
                  batch_axis, sizes_list, recipe, threads, opt_level, warmup, tick) -> list[ProfileResult]:
    from onnxtax.providers import open_session

    from onnxtax.files import writing

    with writing(profile_dir, "--profile"):
        profile_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for p in ort_paths:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", p.request.label)
        for bs in sizes_list:
            tick(f"profile: {p.info.id} batch {bs}")
            session = open_session(onnx_path, _threaded(p.request, threads), opt_level=opt_level, threads=threads,
                                   record_placement=False, profile_prefix=str(profile_dir / f"ort-{safe}-b{bs}"))
            sizes = dict(fixed, **({batch_axis: bs} if batch_axis else {}))
            feeds = resolved.feeds(make_inputs(resolved.specs, sizes, recipe))
            fn, args, _, keep = _bind(session, feeds, p.info.device)  # 1 + BIND_CHECK_RUNS runs (or + 1)
            for _ in range(warmup):
                fn(*args)
            for _ in range(PROFILE_RUNS):
                fn(*args)
            file = session.end_profiling()
            del keep
            runs, run_mean, node_mean, ops = parse_profile(file, last_runs=PROFILE_RUNS)
            out.append(ProfileResult(p.info.id, bs, str(file), runs, run_mean, node_mean, ops))
    return out


def _evaluate_gates(report: BenchReport, latency_gates: dict[str, float], min_speedup: float | None
                    ) -> list[GateResult]:
    out: list[GateResult] = []
    for key, limit in latency_gates.items():
        pct, _, only = key.partition("@")
        for b in report.batches:
            if only and b.batch_size != int(only):
                continue
            for path in b.ort_paths:
                value = b.latency[path].get(pct)
                out.append(GateResult("max_latency_ms", key, path, b.batch_size, limit, value, value <= limit))
    if min_speedup is not None:
        for b in report.batches:
            for path in b.ort_paths:
                value = b.speedup(path)
                if value is None:  # eager failed at this batch size: a failure of its own, no speedup
                    continue
                out.append(GateResult("min_speedup", "eager/ort p50", path, b.batch_size, float(min_speedup),
                                      value, value >= min_speedup))
    return out


# --------------------------------------------------------------------------- plot


def plot_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def require_plot() -> None:
    """Fail before the benchmark runs, not after, when --plot cannot be honoured."""
    if not plot_available():
        raise OnnxtaxError("--plot needs matplotlib, which is not installed",
                           "pip install 'onnxtax[plot]'")


def write_plot(report: BenchReport, path: str | Path) -> Path:
    """PNG of p50 (line) with the p90-p99 band, by batch size, one colour per path.
    Written beside the target and renamed into place."""
    import io

    from onnxtax.files import write_output

    require_plot()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import math

    from matplotlib.ticker import FuncFormatter

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    xs = [b.batch_size for b in report.batches]
    pids = [p.id for p in report.paths]
    # µs for microsecond models, ms otherwise: tick labels read as numbers, not 10^-2
    top = max((b.latency[pid].p50_ms for b in report.batches for pid in pids), default=1.0)
    unit, scale = ("µs", 1000.0) if top < 1.0 else ("ms", 1.0) if top < 1000.0 else ("s", 0.001)
    for pid in pids:
        p50 = [b.latency[pid].p50_ms * scale for b in report.batches]
        p90 = [b.latency[pid].p90_ms * scale for b in report.batches]
        p99 = [b.latency[pid].p99_ms * scale for b in report.batches]
        (line,) = ax.plot(xs, p50, marker="o", label=f"{pid} p50")
        ax.plot(xs, p99, linestyle="--", color=line.get_color(), linewidth=1, label=f"{pid} p99")
        ax.fill_between(xs, p90, p99, color=line.get_color(), alpha=0.15)
    if len(xs) > 1:
        ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel(f"batch size ({report.settings.get('batch_axis') or 'static'})")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(
        lambda v, _: f"{v:g}" if v > 0 and round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else ""))
    ax.set_ylabel(f"latency per call ({unit}); band: p90-p99")
    threads = report.settings.get("threads")
    ax.set_title(f"{Path(report.onnx).name}: latency by batch size "
                 f"({'default' if threads is None else threads} thread{'' if threads == 1 else 's'})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = io.BytesIO()
    try:
        fig.savefig(png, format="png")
    finally:
        plt.close(fig)
    return write_output(path, png.getvalue(), "--plot")
