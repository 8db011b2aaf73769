"""The timing core shared by bench, its sweep and profiles, and quantize's FP32-vs-INT8 timing:
every call timed alone, paths interleaved in rounds of blocks, ORT called through I/O binding
with pre-allocated values, so that each figure measures the same work the same way."""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from onnxtax.core.errors import CheckFailed
from onnxtax.core.defaults import BENCH_MAX_SAMPLES as MAX_SAMPLES
from onnxtax.core.defaults import BENCH_MIN_TIME as DEFAULT_MIN_TIME
from onnxtax.core.defaults import BENCH_THREADS as DEFAULT_THREADS
from onnxtax.core.defaults import BENCH_WARMUP as DEFAULT_WARMUP

ROUNDS = 10  # interleaved blocks per path and batch size
MAX_EXTRA_ROUNDS = 10  # when the warm-up under-estimated the call time
HARNESS_TIME = 0.2  # seconds of empty calls per batch size (capped by min_time)
BIND_CHECK_RUNS = 5  # calls that must reuse the pre-allocated outputs before they are trusted

PathStatus = Literal["measured", "failed", "error"]
EAGER = "eager"
HARNESS = "harness"

# Where pre-allocated OrtValues live for providers that compute off the host.
DEVICE_OF = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda",
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


# --------------------------------------------------------------------------- timing
def noop(*_args) -> None:
    return None


class Timed:
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


class PathFailed(Exception):
    def __init__(self, path: str, exc: BaseException):
        super().__init__(path)
        self.path = path
        self.exc = exc


def measure(timed: list[Timed], warmup: int) -> dict[str, LatencyStats]:
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
        raise PathFailed(current.path, exc) from exc
    finally:
        if gc_was_enabled:
            gc.enable()
    return {t.path: LatencyStats.from_ns(t.samples) for t in timed}


# --------------------------------------------------------------------------- ORT paths
@dataclass
class OrtPath:
    info: PathInfo
    session: Any
    request: Any


def bind(session, feeds: dict, device: str) -> tuple[Callable, tuple, str, list]:
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


def path_failed(path: str, batch: int, exc: BaseException) -> CheckFailed:
    """A path that cannot run at this batch size: a finding about the model (exit 1)."""
    from onnxtax.core.providers import ort_error_summary

    if path == EAGER:
        return CheckFailed(f"eager forward failed at batch size {batch}: {type(exc).__name__}: {exc}",
                           "check the --input shapes against the model")
    line, node = ort_error_summary(exc)
    where = f" (node {node})" if node else ""
    return CheckFailed(f"{path} failed at batch size {batch}: {line}{where}",
                       "run `onnxtax parity` at this batch size to see whether the export baked a size in")


# Providers with their own inference thread pool, which ORT's intra_op_num_threads does not
# reach: measured here, OpenVINO (device_type=CPU) ran on every core with intra_op 1.
_OWN_THREAD_OPTION = {"OpenVINOExecutionProvider": "num_of_threads"}


def threaded(req, threads: int | None):
    """The request with the provider's own thread option set to `threads` (unless the user
    set it), so every path runs on the thread count the report states."""
    from onnxtax.core.providers import ProviderRequest

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
    from onnxtax.core.providers import open_session

    timed, keep_alive = [], []
    batch = next((int(v.shape[0]) for v in feeds.values() if getattr(v, "ndim", 0)), 1)
    for path_id, onnx_path in models.items():
        session = open_session(onnx_path, threaded(request, threads), opt_level=opt_level, threads=threads,
                               record_placement=False)
        try:
            fn, args, _call, keep = bind(session, feeds, DEVICE_OF.get(request.name, "cpu"))
        except Exception as exc:  # noqa: BLE001 - ORT's pybind errors
            raise path_failed(path_id, batch, exc) from exc
        keep_alive.append(keep)
        timed.append(Timed(path_id, fn, args, min_time))
    try:
        return measure(timed, warmup)
    except PathFailed as failed:
        raise path_failed(failed.path, batch, failed.exc) from failed.exc
