"""The options of one benchmark: what `onnxtax bench`, `run_bench(...)` and a ci `[bench]` table set."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxtax.core import defaults
from onnxtax.core.errors import InputSpecError
from onnxtax.core.options import MAX_THREADS, StageOptions, check_choice, check_number, check_positive_int, check_seed
from onnxtax.core.specs import ValueRange
from onnxtax.bench.report import GATE_KEYS


@dataclass
class BenchOptions(StageOptions):
    """`batch_sizes` default (1, 8, 64); `dims` sizes the other dynamic axes (a list value for the
    batch axis replaces `batch_sizes`). `providers` as on the command line (`cpu`,
    `openvino:device_type=CPU`); default every compute provider. Gates: `max_latency_ms`
    {"p99": 5, "p50@1": 0.05} and `min_speedup`. `threads` None: each runtime's own default.
    `data_files`: time the rows of these files (repeated up to each batch size, their other axes as
    they are) instead of random inputs."""

    batch_sizes: list[int] | None = None
    dims: dict[str, list[int] | int] = field(default_factory=dict)
    providers: list[Any] | None = None
    skip_unavailable: bool = False
    threads: int | None = defaults.BENCH_THREADS
    opt_level: str = defaults.OPT_LEVEL
    warmup: int = defaults.BENCH_WARMUP
    min_time: float = defaults.BENCH_MIN_TIME
    cold_start: bool = True
    cold_start_runs: int = defaults.BENCH_COLD_START_RUNS
    sweep: bool = False
    profile_dir: str | Path | None = None
    max_latency_ms: dict[str, float] = field(default_factory=dict)
    min_speedup: float | None = None
    ranges: dict[str, ValueRange | tuple[float, float]] = field(default_factory=dict)
    seed: int = defaults.PARITY_SEED
    data_files: list[Any] = field(default_factory=list)  # real rows (an .npz, or text for hf:/st: models)

    def validate(self) -> None:
        check_choice(self.opt_level, "--opt-level", tuple(defaults.ORT_OPT_LEVELS))
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 1:
            raise InputSpecError(f"--warmup {self.warmup}: at least 1 warm-up call is needed (it calibrates the "
                                 "blocks)", "e.g. --warmup 20")
        check_number(self.min_time, "--min-time", "1", low=0, strict_low=True)
        if self.threads is not None:
            check_positive_int(self.threads, "--threads", "1 (or 0 for each runtime's default)", high=MAX_THREADS)
        check_seed(self.seed)
        check_positive_int(self.cold_start_runs, "--cold-start-runs", "3 (or --no-cold-start)")
        for b in self.batch_sizes or []:
            check_positive_int(b, "--batch-sizes", "1,8,64")
        if self.min_speedup is not None:
            check_number(self.min_speedup, "--min-speedup", "2", low=0, strict_low=True)
        for key, limit in (self.max_latency_ms or {}).items():
            if not re.fullmatch(r"(p50|p90|p99|max)(?:@(\d+))?", key.strip().lower()) or not (
                    isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit > 0
                    and math.isfinite(limit)):
                raise InputSpecError(f"latency gate '{key}={limit}' needs PERCENTILE[@BATCH]=MS with MS > 0",
                                     f"percentiles: {', '.join(GATE_KEYS)}; e.g. --max-latency-ms p99=5")


def parse_batch_sizes(text: str, *, flag: str = "--batch-sizes") -> list[int]:
    """`1,8,64` -> [1, 8, 64]; an error names `flag`, the option the text came from."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not re.fullmatch(r"\d+", part) or int(part) < 1:
            raise InputSpecError(f"{flag} '{text}': '{part}' is not a positive integer", f"e.g. {flag} 1,8,64")
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


def check_gates(max_latency_ms: dict[str, float] | None, min_speedup: float | None,
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
