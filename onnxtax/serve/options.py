"""The options of one serving benchmark: what `onnxtax serve-bench`, `run_serve_bench(...)` and a ci
`[serve]` table set. The correctness part (shapes, samples, tolerances) is parity's."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxtax.core.errors import InputSpecError
from onnxtax.core.options import check_choice, check_number, check_positive_int
from onnxtax.parity.options import ComparisonOptions

PATHS = ("eager", "ort", "node")
ARRIVALS = ("poisson", "constant")
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p99.9": 99.9}
DEFAULT_SLO = "p99=20ms"
MAX_POLICIES = 12  # a grid larger than this is minutes per path: name the policies you mean


def parse_slo(text: str) -> tuple[str, float]:
    """`p99=20ms` (or `p95=5`, ms implied; `p99=0.5s`) -> ("p99", 20.0)."""
    m = re.fullmatch(r"\s*(p50|p90|p95|p99|p99\.9)\s*=\s*([0-9.eE+-]+)\s*(ms|s|us|µs)?\s*", str(text).lower())
    value = None
    if m:
        try:
            value = float(m.group(2)) * {"s": 1000.0, "us": 1e-3, "µs": 1e-3}.get(m.group(3) or "ms", 1.0)
        except ValueError:
            value = None
    if not m or value is None or not math.isfinite(value) or value <= 0:
        raise InputSpecError(f"--slo '{text}' needs PERCENTILE=LATENCY, e.g. p99=20ms",
                             f"percentiles: {', '.join(PERCENTILES)}; units ms (default), s or us")
    return m.group(1), value


def parse_number_list(text: str, flag: str, *, integer: bool = False, zero: bool = False) -> list:
    """`1,8,32` -> [1, 8, 32]; positive (or >= 0 with zero=True), no repeats."""
    out: list = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            value = int(part) if integer else float(part)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < 0 or (value == 0 and not zero):
            kind = "integer" if integer else "number"
            raise InputSpecError(f"{flag} '{text}': '{part}' is not a {'non-negative' if zero else 'positive'} {kind}",
                                 f"e.g. {flag} {'1,8,32' if integer else '1000,5000'}")
        if value not in out:
            out.append(value)
    return out


def parse_path_values(texts: list[str], flag: str, example: str, *, at: bool = False) -> dict[str, float]:
    """`5000` (every path) or `node=5000`; with at=True also `5@1000` and `ort=5@1000` (at that offered load)
    -> {"*": 5000.0, "node": 5000.0, "ort@1000": 5.0}."""
    out: dict[str, float] = {}
    for text in texts:
        path, sep, value = str(text).rpartition("=")
        path = path.strip().lower() if sep else "*"
        value, _, load = value.partition("@") if at else (value, "", "")
        key = path + (f"@{_number(load, text, flag, example):g}" if load else "")
        if path != "*" and path not in PATHS:
            raise InputSpecError(f"{flag} '{text}': no path '{path}'", f"paths: {', '.join(PATHS)}; e.g. {example}")
        out[key] = _number(value, text, flag, example)
    return out


def _number(text: str, whole: str, flag: str, example: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value <= 0:
        raise InputSpecError(f"{flag} '{whole}' needs a positive number", f"e.g. {example}")
    return value


@dataclass
class ServeOptions(ComparisonOptions):
    """Paths: `eager` (PyTorch in Python), `ort` (ONNX Runtime in Python), `node` (onnxruntime-node).
    Policies: every max_batch x max_wait_ms x threads (max_batch 1 ignores the wait). Load: `rates`
    (rows/s, measured as given) or a ramp from `start_rate`, x`growth` until the SLO is missed twice,
    then `refine` bisections. The comparison fields (dims, samples, ranges, tolerances...) are the
    check of each host's outputs against the eager model (parity's rule); `request_dims` sizes the
    other dynamic axes of a request (default: their export size)."""

    paths: list[str] = field(default_factory=lambda: list(PATHS))
    slo: str = DEFAULT_SLO
    max_batch: list[int] = field(default_factory=lambda: [1, 32])
    max_wait_ms: list[float] = field(default_factory=lambda: [2.0])
    threads: list[int] = field(default_factory=lambda: [1])
    workers: int = 1
    intra_op_threads: int = 1
    arrival: str = "poisson"
    rates: list[float] | None = None
    start_rate: float = 200.0
    growth: float = 2.0
    refine: int = 3
    max_levels: int = 24
    duration_s: float = 2.0
    warmup_s: float = 0.3
    cold_start_runs: int = 3
    generator_floor: bool = True
    request_dims: dict[str, int] = field(default_factory=dict)
    server_cores: int | None = None
    price_per_hour: float | None = None
    min_qps_at_slo: dict[str, float] = field(default_factory=dict)
    max_p99_ms: dict[str, float] = field(default_factory=dict)
    node_ort: str = "1.30.0"
    node_dir: str | Path | None = None
    node: str | None = None
    offline: bool = False

    def validate(self) -> None:
        super().validate()
        if not self.paths:
            raise InputSpecError("--paths names no path", f"e.g. --paths {','.join(PATHS)}")
        for p in self.paths:
            check_choice(p, "--paths", PATHS)
        parse_slo(self.slo)
        if not self.max_batch or not self.max_wait_ms or not self.threads:
            raise InputSpecError("the batching policy grid is empty", "e.g. --max-batch 1,32 --max-wait-ms 2")
        for b in self.max_batch:
            check_positive_int(b, "--max-batch", "1,32")
        for w in self.max_wait_ms:
            check_number(w, "--max-wait-ms", "0,2", low=0)
        for t in self.threads:
            check_positive_int(t, "--threads", "1,2")
        if len(self.policies()) > MAX_POLICIES:
            raise InputSpecError(f"{len(self.policies())} batching policies (max-batch x max-wait-ms x threads): "
                                 f"each is a whole load ramp per path", f"name at most {MAX_POLICIES}, e.g. "
                                 "--max-batch 1,32 --max-wait-ms 0,2")
        check_positive_int(self.workers, "--workers", "2")
        check_positive_int(self.intra_op_threads, "--intra-op-threads", "1")
        check_choice(self.arrival, "--arrival", ARRIVALS)
        for r in self.rates or []:
            check_number(r, "--rates", "1000,5000", low=0, strict_low=True)
        check_number(self.start_rate, "--start-rate", "200", low=0, strict_low=True)
        check_number(self.growth, "--growth", "2", low=1.05)
        check_positive_int(self.refine, "--refine", "3", zero=True)
        check_positive_int(self.max_levels, "--max-levels", "24")
        check_number(self.duration_s, "--duration", "2", low=0, strict_low=True)
        check_number(self.warmup_s, "--warmup", "0.3", low=0)
        if self.warmup_s >= self.duration_s:
            raise InputSpecError(f"--warmup {self.warmup_s:g} s leaves nothing of --duration {self.duration_s:g} s "
                                 "to measure", "e.g. --duration 2 --warmup 0.3")
        check_positive_int(self.cold_start_runs, "--cold-start-runs", "3 (0: none)", zero=True)
        if self.server_cores is not None:
            check_positive_int(self.server_cores, "--server-cores", "1")
        if self.price_per_hour is not None:
            check_number(self.price_per_hour, "--price-per-hour", "0.10", low=0, strict_low=True)
        for name, (value, example) in {"--min-qps-at-slo": (self.min_qps_at_slo, "5000 or node=5000"),
                                       "--max-p99-ms": (self.max_p99_ms, "5, 5@1000 or ort=5@1000")}.items():
            for key, limit in (value or {}).items():
                path, _, load = str(key).partition("@")
                ok = path in (*PATHS, "*") and (not load or _is_positive(load)) and _is_positive(limit)
                if not ok:
                    raise InputSpecError(f"{name} '{key}={limit}' is not a gate", f"e.g. {name} {example}")
        for axis, size in (self.request_dims or {}).items():
            check_positive_int(size, f"--dim {axis}=", "128")
        from onnxtax.serve.node_env import check_version

        check_version(self.node_ort)

    @property
    def slo_key(self) -> str:
        return parse_slo(self.slo)[0]

    @property
    def slo_ms(self) -> float:
        return parse_slo(self.slo)[1]

    def policies(self) -> list[dict]:
        """max_batch x max_wait_ms x threads, without repeats (a batch of 1 never waits)."""
        out: list[dict] = []
        for b in self.max_batch:
            for w in self.max_wait_ms:
                for t in self.threads:
                    policy = {"max_batch": int(b), "max_wait_ms": float(w) if b > 1 else 0.0, "threads": int(t)}
                    if policy not in out:
                        out.append(policy)
        return out

    def gate_loads(self) -> list[float]:
        """Offered loads a --max-p99-ms gate names: each is measured on every curve."""
        return sorted({float(k.partition("@")[2]) for k in self.max_p99_ms if "@" in k})


def _is_positive(value: Any) -> bool:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool) and math.isfinite(v) and v > 0
