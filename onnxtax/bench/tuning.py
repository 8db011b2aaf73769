"""Bench's --sweep (graph optimisation levels x thread counts, timed by the same harness) and
--profile (ORT's own per-operator profile, in a separate session because profiling slows the
run it records): which setting is fastest, and where the time goes."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxtax.core.inputs import ResolvedInputs
from onnxtax.core.specs import make_inputs
from onnxtax.bench.timing import (DEVICE_OF, LatencyStats, bind, measure, OrtPath, path_failed, PathFailed,
                            threaded, Timed)

PROFILE_RUNS = 200
TOP_OPS = 10


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


def _sweep_threads(threads: int | None) -> list[int]:
    cpus = os.cpu_count() or 1
    values = {1, min(2, cpus), cpus}
    if threads:
        values.add(threads)
    return sorted(values)


def run_sweep(onnx_path: Path, usable, resolved: ResolvedInputs, fixed, batch_axis, sizes_list, recipe, threads,
               opt_level, warmup, min_time, tick) -> SweepResult:
    from onnxtax.core.providers import OPT_LEVELS, ProviderRequest, open_session

    thread_counts = _sweep_threads(threads)
    result = SweepResult(list(sizes_list), list(OPT_LEVELS), thread_counts,
                         configured=(opt_level, threads) if threads else None)
    for req in usable:
        # one provider's sessions at a time (each a copy of the weights): the best setting is chosen
        # per provider, so only its own settings need timing side by side
        configs: list[tuple[str, str, int, Any, ProviderRequest]] = []
        for level in OPT_LEVELS:
            for n in thread_counts:
                session = open_session(onnx_path, threaded(req, n), opt_level=level, threads=n,
                                       record_placement=False)
                configs.append((f"ort:{req.label}", level, n, session, req))
        session = None  # the sessions are in configs only: the next provider's list replaces them
        for bs in sizes_list:
            tick(f"sweep: ort:{req.label} batch {bs}")
            _sweep_batch(configs, bs, resolved, fixed, batch_axis, recipe, warmup, min_time, result)
    return result


def _sweep_batch(configs: list, bs: int, resolved: ResolvedInputs, fixed, batch_axis, recipe, warmup, min_time,
                 result: SweepResult) -> None:
    """Every setting of one provider at one batch size, interleaved."""
    sizes = dict(fixed, **({batch_axis: bs} if batch_axis else {}))
    feeds = resolved.feeds(make_inputs(resolved.specs, sizes, recipe))
    timed, keep_alive, meta = [], [], {}
    for i, (path, level, n, session, req) in enumerate(configs):
        try:
            fn, args, _, keep = bind(session, feeds, DEVICE_OF.get(req.name, "cpu"))
        except Exception as exc:  # noqa: BLE001
            raise path_failed(f"{path} ({level}, {n} threads)", bs, exc) from exc
        keep_alive.append(keep)
        key = f"sweep{i}"
        meta[key] = (path, level, n)
        timed.append(Timed(key, fn, args, min_time))
    try:
        latency = measure(timed, warmup)
    except PathFailed as failed:
        path, level, n = meta[failed.path]
        raise path_failed(f"{path} ({level}, {n} threads)", bs, failed.exc) from failed.exc
    for key, (path, level, n) in meta.items():
        result.results.append(SweepEntry(path, level, n, bs, latency[key]))


def run_profiles(profile_dir: Path, onnx_path: Path, ort_paths: list[OrtPath], resolved: ResolvedInputs, fixed,
                  batch_axis, sizes_list, recipe, threads, opt_level, warmup, tick) -> list[ProfileResult]:
    from onnxtax.core.providers import open_session

    from onnxtax.core.files import writing

    with writing(profile_dir, "--profile"):
        profile_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for p in ort_paths:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", p.request.label)
        for bs in sizes_list:
            tick(f"profile: {p.info.id} batch {bs}")
            session = open_session(onnx_path, threaded(p.request, threads), opt_level=opt_level, threads=threads,
                                   record_placement=False, profile_prefix=str(profile_dir / f"ort-{safe}-b{bs}"))
            sizes = dict(fixed, **({batch_axis: bs} if batch_axis else {}))
            feeds = resolved.feeds(make_inputs(resolved.specs, sizes, recipe))
            fn, args, _, keep = bind(session, feeds, p.info.device)  # 1 + BIND_CHECK_RUNS runs (or + 1)
            for _ in range(warmup):
                fn(*args)
            for _ in range(PROFILE_RUNS):
                fn(*args)
            file = session.end_profiling()
            del keep, fn, args, session  # one profiling session at a time: this one goes before the next loads
            runs, run_mean, node_mean, ops = parse_profile(file, last_runs=PROFILE_RUNS)
            out.append(ProfileResult(p.info.id, bs, str(file), runs, run_mean, node_mean, ops))
    return out
