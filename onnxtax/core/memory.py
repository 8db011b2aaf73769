"""How much memory a stage needs, how much it may have, and how much it took.

A stage killed by the kernel's OOM killer (SIGKILL, exit 137) writes no report: the only
trace is what was printed before. So every stage that loads a model estimates its need
from the weights' size before the heavy work (`StageMeter.check`: a MemoryWarning, or with
ONNXTAX_MEMORY_CHECK=fail a usage error, exit 2), and records its real peak RSS afterwards
(`StageMeter.record`), so that the next run can be sized from the last one.

Peak RSS on Linux is VmHWM of /proc/self/status, reset at each stage's start by writing "5"
to /proc/self/clear_refs (so each stage of one `onnxtax ci` process gets its own peak);
elsewhere (macOS: ru_maxrss in bytes; Linux: KiB) it is the process's peak so far, and
`peak_source` says so. Only this process is measured: child processes (runtimes, bench's
cold starts, lint's non-CPU probes) have their own.

What the process may have: the lower of the cgroup's limit minus its usage (v2
memory.max - memory.current, v1 memory.limit_in_bytes - memory.usage_in_bytes) and
MemAvailable of /proc/meminfo, plus what this process already holds (its RSS is part of the
estimate). ONNXTAX_MEMORY_LIMIT replaces all of that with a size (plan a 32 GB runner's run
on a bigger machine).

Standard library only: the CLI imports this before torch.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnxtax.core import defaults
from onnxtax.core.errors import OnnxtaxError

CHECK_ENV = "ONNXTAX_MEMORY_CHECK"  # warn (default) | fail | off
LIMIT_ENV = "ONNXTAX_MEMORY_LIMIT"  # e.g. 32GB, 512MB, 1.5e9: the memory the process may use, instead of the machine's
CHECK_MODES = ("warn", "fail", "off")

# What lowers each stage's need, for the warning's fix.
ADVICE = {
    "export": "the exporter itself needs this (onnxtax adds only its imports): a bigger runner, "
              "or export on a bigger machine and run the other stages on the artifact (onnxtax ci --reuse-artifacts)",
    "parity": "close what else runs on the machine, or a bigger runner (the eager model alone holds 1x)",
    "parity-unshared": "--share-weights always (auto, the default, shares from 256 MB of weights): the CPU "
                       "session uses the eager model's memory, one copy of the weights instead of two; "
                       "or a bigger runner",
    "lint": "a bigger runner",
    "verify": "a bigger runner",
    "bench": "bench holds the eager model and a server's session (two copies): turn it off for this model "
             "(onnxtax ci --no-bench) or run it on a bigger runner",
    "runtimes": "each release loads the model in a child process while the eager reference is held: "
                "a bigger runner, or fewer models per job",
    "quantize": "quantize holds the FP32 and INT8 models, the eager model and their sessions: a bigger runner",
}


class MemoryWarning(UserWarning):
    """A stage's estimated memory need exceeds what this process can have (issued before the work)."""

    def __init__(self, message: str, advice: str = ""):
        super().__init__(message)
        self.message, self.advice = message, advice

    def __str__(self) -> str:
        return self.message


class MemoryCheckError(OnnxtaxError):
    """ONNXTAX_MEMORY_CHECK=fail and a stage's estimate exceeds the memory available: exit 2 before the work."""


def format_bytes(n: float) -> str:
    """Decimal units, as RAM and runners are sold: 2.68 GB, 412 MB, 96 KB."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}" if unit == "GB" else f"{n / size:.0f} {unit}"
    return f"{int(n)} B"


def parse_size(text: str) -> int:
    """`32GB`, `32G`, `512MB`, `1.5e9` -> bytes (decimal units; GiB/MiB binary)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmgt]i?)?b?\s*", text.lower())
    if not m:
        raise OnnxtaxError(f"{LIMIT_ENV}={text!r} is not a size", f"e.g. {LIMIT_ENV}=32GB or {LIMIT_ENV}=512MB")
    unit = m.group(2) or ""
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
             "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}[unit]
    return int(float(m.group(1)) * scale)


# --------------------------------------------------------------------------- weights


def onnx_weights_bytes(onnx_path: str | Path) -> int | None:
    """Bytes of an .onnx file's large initializers, from the proto's headers (no weight is read)."""
    from onnxtax.core.skeleton import stored_weight_bytes

    try:  # min_bytes=1: every initializer stored as raw bytes, not only those parity shares
        return stored_weight_bytes(onnx_path, min_bytes=1)
    except (OSError, ValueError):  # unreadable or not a proto: the stage itself says what is wrong
        return None


def module_weights_bytes(module: Any) -> int:
    """Bytes of a torch module's parameters and buffers, each storage counted once (tied weights)."""
    seen: set[int] = set()
    total = 0
    for t in list(module.parameters()) + list(module.buffers()):
        try:
            key = t.untyped_storage().data_ptr()
        except (RuntimeError, AttributeError):  # meta or exotic tensors: count them by size
            key = id(t)
        if key in seen and key != 0:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total


# --------------------------------------------------------------------------- the process


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak() -> str:
    """Start a new peak: VmHWM := current RSS (Linux >= 4.0). Returns what the next peak will mean."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return "VmHWM since stage start"
    except OSError:
        if _status_kib("VmHWM") is not None:
            return "VmHWM since process start (could not be reset)"
        return "ru_maxrss since process start"


def peak_rss_bytes() -> tuple[int, str]:
    """This process's peak resident set size in bytes and where it was read."""
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm * 1024, "VmHWM"
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak if sys.platform == "darwin" else peak * 1024), "ru_maxrss"  # macOS: bytes; Linux: KiB


def current_rss_bytes() -> int:
    rss = _status_kib("VmRSS")
    return rss * 1024 if rss is not None else 0


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (v2, no limit) -> None


def _cgroup_headroom() -> tuple[int, str] | None:
    """Limit minus usage of this process's memory cgroup, or None when it has no limit."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hier, controllers, rel = (line.split(":", 2) + ["", ""])[:3]
        if hier == "0" and controllers == "":  # v2 unified
            files, root = ("memory.max", "memory.current"), Path("/sys/fs/cgroup")
            label = "cgroup v2 memory.max - memory.current"
        elif "memory" in controllers.split(","):
            files, root = ("memory.limit_in_bytes", "memory.usage_in_bytes"), Path("/sys/fs/cgroup/memory")
            label = "cgroup v1 memory.limit_in_bytes - memory.usage_in_bytes"
        else:
            continue
        # inside a container the cgroup namespace root is mounted at the root: try the path, then the root
        for folder in (root / rel.lstrip("/"), root):
            limit, usage = _read_int(folder / files[0]), _read_int(folder / files[1])
            if limit is not None and usage is not None and limit < 2**60:  # v1 "no limit" is ~2**63
                return max(limit - usage, 0), label
            if limit is not None or (folder / files[0]).exists():
                break
    return None


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_memory() -> tuple[int | None, str]:
    """What this process can have in all: ONNXTAX_MEMORY_LIMIT, else min(cgroup headroom,
    MemAvailable) + this process's RSS; (None, why) when the machine does not say."""
    env = os.environ.get(LIMIT_ENV, "").strip()
    if env:
        return parse_size(env), LIMIT_ENV
    options = [c for c in (_cgroup_headroom(), (_mem_available(), "MemAvailable")) if c and c[0] is not None]
    if not options:
        return None, "unknown on this platform"
    free, source = min(options, key=lambda c: c[0])
    return free + current_rss_bytes(), f"{source} + this process's RSS"


def check_mode() -> str:
    mode = os.environ.get(CHECK_ENV, "").strip().lower() or defaults.MEMORY_CHECK
    if mode not in CHECK_MODES:
        raise OnnxtaxError(f"{CHECK_ENV}={mode!r} is not a memory check mode", f"use one of: {', '.join(CHECK_MODES)}")
    return mode


# --------------------------------------------------------------------------- estimate and record


@dataclass
class MemoryEstimate:
    """A stage's need from the weights' size and the measured factors (defaults.MEMORY_FACTORS)."""

    stage: str
    kind: str  # the MEMORY_FACTORS key used, e.g. "parity-unshared"
    weights_bytes: int
    factor: float
    need_bytes: int
    available_bytes: int | None
    available_source: str
    check: str  # warn | fail | off

    @property
    def fits(self) -> bool | None:
        return None if self.available_bytes is None else self.need_bytes <= self.available_bytes

    @property
    def warning(self) -> str | None:
        if self.fits is not False:
            return None
        return (f"{self.stage} needs about {format_bytes(self.need_bytes)} ({self.factor:g}x the "
                f"{format_bytes(self.weights_bytes)} of weights + {format_bytes(defaults.MEMORY_BASE_BYTES)}); "
                f"this process can have {format_bytes(self.available_bytes or 0)} ({self.available_source}): "
                "expect the run to be killed (exit 137, no report)")

    @property
    def advice(self) -> str:
        return ADVICE.get(self.kind, ADVICE.get(self.stage, "a bigger runner"))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "factor": self.factor, "need_bytes": self.need_bytes,
                "available_bytes": self.available_bytes, "available_source": self.available_source,
                "fits": self.fits, "check": self.check, "warning": self.warning,
                "advice": self.advice if self.fits is False else None}


def estimate(stage: str, weights_bytes: int, kind: str | None = None, *, extra_factor: float = 0.0,
             available: tuple[int | None, str] | None = None, check: str | None = None) -> MemoryEstimate:
    """The estimate of `stage` for `weights_bytes`; `available` (bytes, where from) defaults to
    this machine's (available_memory()), `check` to ONNXTAX_MEMORY_CHECK."""
    kind = kind or stage
    factor = defaults.MEMORY_FACTORS[kind] + extra_factor
    need = int(weights_bytes * factor) + defaults.MEMORY_BASE_BYTES
    avail, source = available if available is not None else available_memory()
    return MemoryEstimate(stage, kind, int(weights_bytes), round(factor, 3), need, avail, source,
                          check or check_mode())


@dataclass
class MemoryRecord:
    """The `memory` key of a stage's report."""

    weights_bytes: int | None
    peak_rss_bytes: int | None
    peak_source: str
    estimate: MemoryEstimate | None = None
    # the process just before the stage built the model (Python with torch and ORT imported; a
    # module passed in by a library caller is in it): what the interpreter costs, not the stage
    before_model_bytes: int | None = None

    @property
    def ratio(self) -> float | None:
        if not self.weights_bytes or self.peak_rss_bytes is None:
            return None
        return self.peak_rss_bytes / self.weights_bytes

    @property
    def added_ratio(self) -> float | None:
        """What the stage added over the process before the model, per byte of weights."""
        if not self.weights_bytes or self.peak_rss_bytes is None or self.before_model_bytes is None:
            return None
        return max(self.peak_rss_bytes - self.before_model_bytes, 0) / self.weights_bytes

    def to_dict(self) -> dict:
        return {"weights_bytes": self.weights_bytes, "peak_rss_bytes": self.peak_rss_bytes,
                "peak_source": self.peak_source,
                "peak_over_weights": round(self.ratio, 3) if self.ratio is not None else None,
                "before_model_bytes": self.before_model_bytes,
                "added_over_weights": round(self.added_ratio, 3) if self.added_ratio is not None else None,
                "preflight": self.estimate.to_dict() if self.estimate else None}

    def line(self) -> str:
        """`peak memory 2.95 GB (1.10x the 2.68 GB of weights)`: one line for a command's summary."""
        if self.peak_rss_bytes is None:
            return "peak memory not measured"
        peak = f"peak memory {format_bytes(self.peak_rss_bytes)}"
        if not self.weights_bytes:
            return peak
        if self.weights_bytes < 10**8:  # a ratio to a few KB of weights says nothing
            return f"{peak} (weights {format_bytes(self.weights_bytes)})"
        added = "" if self.added_ratio is None else (
            f"; {self.added_ratio:.2f}x above the {format_bytes(self.before_model_bytes)} the process held before "
            "the model")
        return f"{peak} ({self.ratio:.2f}x the {format_bytes(self.weights_bytes)} of weights{added})"


class StageMeter:
    """One stage's memory: created at the stage's start (resets the peak), `check` before the
    heavy work, `record` at the end."""

    def __init__(self, stage: str):
        self.stage = stage
        # a stage inside another (export running its target release through runtimes) resets the
        # peak: every meter still open keeps the peak reached so far
        peak = peak_rss_bytes()[0]
        for outer in list(_OPEN):
            outer._carried = max(outer._carried, peak)
        self._carried = 0
        self.before_model: int | None = None
        self.source = reset_peak()
        self.weights_bytes: int | None = None
        self.estimate: MemoryEstimate | None = None
        _OPEN.add(self)

    def check(self, weights_bytes: int | None, kind: str | None = None, *, extra_factor: float = 0.0,
              available: tuple[int | None, str] | None = None, check: str | None = None) -> MemoryEstimate | None:
        """Estimate, and warn (MemoryWarning) or raise MemoryCheckError when it does not fit."""
        self.weights_bytes = weights_bytes
        mode = check or check_mode()
        if weights_bytes is None or mode == "off":
            return None
        est = estimate(self.stage, weights_bytes, kind, extra_factor=extra_factor, available=available, check=mode)
        self.estimate = est
        if est.fits is False:
            if mode == "fail":
                raise MemoryCheckError(est.warning or "", f"{est.advice}; or {CHECK_ENV}=warn to run anyway")
            warnings.warn(MemoryWarning(est.warning, est.advice), stacklevel=2)
        return est

    def mark_before_model(self) -> None:
        """The process's memory now, just before the stage builds the model: the interpreter and its
        libraries, which every process pays and no stage can shed (0.25 GB with torch and ORT)."""
        self.before_model = current_rss_bytes() or None

    def record(self) -> MemoryRecord:
        peak, where = peak_rss_bytes()
        peak = max(peak, self._carried)
        _OPEN.discard(self)
        source = self.source if where == "VmHWM" or self.source.startswith("ru_maxrss") else \
            "ru_maxrss since process start"
        return MemoryRecord(self.weights_bytes, peak, source, self.estimate, self.before_model)


_OPEN: "weakref.WeakSet[StageMeter]" = weakref.WeakSet()  # meters created and not yet recorded
