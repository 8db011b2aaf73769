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
- Memory: the timed ORT sessions load the file as a server does (pre-packing on); they never
  share weights with the eager model, which would turn pre-packing off and time another
  session than the deployed one. While the paths are timed the process holds the eager
  model and one session per provider (interleaving needs them all alive): two copies of the
  weights and ORT's working memory, the floor of the comparison. Then the sessions and the
  eager model (when built here from its spec) are released, before the cold-start processes,
  the sweep and the profiles load the model again. The sweep holds one session per
  optimisation level x thread count of one provider at a time (interleaved too); a profile
  holds one session at a time.
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

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxtax.core import defaults
from onnxtax.bench.cold_start import ColdStart, _cold_start
from onnxtax.core.errors import CheckFailed, InputSpecError, OnnxtaxError
from onnxtax.core.inputs import ResolvedInputs
from onnxtax.core.progress import Progress
from onnxtax.core.report import Verdict
from onnxtax.core.specs import InputSpec, SampleRecipe, ValueRange, concrete_shape, make_inputs, symbols_of
from onnxtax.bench.timing import (_DEVICE_OF, EAGER, HARNESS, HARNESS_TIME, ROUNDS, LatencyStats, PathInfo, _bind,
                            _measure, _noop, _OrtPath, _path_failed, _PathFailed, _threaded, _Timed,
                            time_onnx_models)
from onnxtax.bench.tuning import PROFILE_RUNS, ProfileResult, SweepResult, _run_profiles, _run_sweep, parse_profile
from onnxtax.core.defaults import BENCH_COLD_START_RUNS as DEFAULT_COLD_START_RUNS
from onnxtax.core.defaults import BENCH_MIN_TIME as DEFAULT_MIN_TIME
from onnxtax.core.defaults import BENCH_THREADS as DEFAULT_THREADS
from onnxtax.core.defaults import BENCH_WARMUP as DEFAULT_WARMUP

# The public names, including those whose home is timing, cold_start or tuning: callers keep
# importing them from here.
__all__ = ["BatchResult", "BenchReport", "ColdStart", "EAGER", "GateResult", "HARNESS", "LatencyStats", "PathInfo",
           "PROFILE_RUNS", "ProfileResult", "ROUNDS", "SCHEMA_VERSION", "SweepResult", "batch_axis_of",
           "parse_batch_sizes", "parse_latency_gates", "parse_profile", "plot_available", "require_plot", "run_bench",
           "time_onnx_models", "write_plot"]

SCHEMA_VERSION = 2  # 2: input_source labels shared with parity; per-path status and reason; failures
GATE_KEYS = ("p50", "p90", "p99", "max")
PERCENTILE_KEYS = ("p50", "p90", "p99", "min", "max", "mean")


# --------------------------------------------------------------------------- results


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


# --------------------------------------------------------------------------- main


def _eager_model(model) -> tuple[Any, str | None, str | None, str | None]:
    """(nn.Module or None, spec string or None, class name, why cold start cannot rebuild it)."""
    if model is None:
        return None, None, None, "no PyTorch model given"
    from onnxtax.core.loading import resolve_model

    loaded = resolve_model(model)
    if not loaded.in_memory:
        return loaded.module, loaded.spec, loaded.class_name, None
    loaded.module.eval()
    return loaded.module, None, loaded.class_name, ("the model was given as an in-memory nn.Module: a fresh "
                                                    "process can only rebuild it from a SPEC string")


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
    from onnxtax.core.inputs import resolve_inputs
    from onnxtax.core.memory import StageMeter, onnx_weights_bytes
    from onnxtax.core.providers import OPT_LEVELS, open_session, placement_of, resolve_providers
    from onnxtax.core.report import host_facts

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

    meter = StageMeter("bench")
    resolved = resolve_inputs(onnx_path, inputs, ranges=ranges)
    specs, ranges = resolved.specs, resolved.ranges
    _refuse_bfloat16(specs)
    meter.check(onnx_weights_bytes(onnx_path), extra_factor=0.0 if model is not None else -1.0)  # no eager copy
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
        from onnxtax.core.loading import check_inputs_match

        module = check_inputs_match(module, specs, spec or class_name or "the model")

    n_steps = ((cold_start_runs * (len(usable) + (1 if spec else 0))) if cold_start else 0) + len(sizes_list)
    if sweep:
        n_steps += len(usable) * len(sizes_list)
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
                from onnxtax.core.inputs import torch_tensors

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
    torch_threads = paths[0].threads if module is not None else None
    # Every path is timed: the eager model (when built here from its spec) and the sessions are
    # released before anything loads the model again, so the cold-start processes, the sweep's and
    # the profiles' sessions do not run beside them (each would be one more copy of the weights).
    for p in ort_paths:
        p.session = None
    module = session = timed = fn = args = keep = tensors = None  # noqa: F841 - the last references to them

    cold: dict[str, ColdStart] = {}
    cold_start_reason = None if cold_start else "not requested (--no-cold-start)"
    if cold_start:
        first_sizes = dict(fixed, **({batch_axis: sizes_list[0]} if batch_axis else {}))
        cold = _cold_start(spec, cold_reason, onnx_path, ort_paths, specs, first_sizes, ranges, threads,
                           opt_level, cold_start_runs, tick)

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
                "torch_threads": torch_threads, "opt_level": opt_level,
                "warmup": warmup, "min_time_s": min_time, "rounds": ROUNDS, "timer": "time.perf_counter_ns",
                "gc_disabled": True, "interleaved": "ABBA blocks per batch size", "seed": seed}
    report = BenchReport(str(onnx_path), spec, class_name, specs, resolved.source, settings, paths,
                         [r.label for r in skipped], batches, cold, cold_start_reason,
                         cold_start_runs if cold_start else 0, sweep_result, profiles)
    report.gates = _evaluate_gates(report, gates, min_speedup)
    report.host = host_facts()
    report.duration_s = time.monotonic() - started
    report.memory = meter.record()
    if progress:
        progress("done", n_steps, n_steps)
    return report


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

    from onnxtax.core.files import write_output

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
