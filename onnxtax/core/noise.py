"""How far the eager model's own arithmetic is from exact: the noise a correct export is held to.

A correct ONNX export does not compute the eager outputs bit for bit: its kernels sum in another
order, fuse ops, lower precision where the model asks for it. How far apart two correct
computations land depends on the model (the width and depth of its reductions, its dtype,
cancellation near zero), not on a constant. So parity measures it: the same eager model is run in
float64 on the same inputs, and per output the RMS of (eager - float64) is the model's own
rounding noise at that shape. A correct export stays within a small multiple of it; a changed
weight or a wrong op moves outputs by far more.

The float64 run converts each module's own parameters and buffers only while that module runs
(forward pre-/post-hooks), so a 7 GB model is never held in float64: at most the modules on the
call stack at once, one layer at a time. Inputs are cast to float64; integer and bool tensors stay
as they are. A model that cannot run in float64 (an op without a float64 kernel) gives None: the
rule then keeps its fixed floor alone, and says so.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np


# A Linear whose weight is larger than this computes in float64 one block of output rows at a time:
# a 268 MB weight would otherwise cost 537 MB more while its layer runs (2x the weights of a
# four-layer model); an Embedding's lookup is exact, so its table is never converted at all.
BLOCK_BYTES = 4 * 2**20


@contextmanager
def float64_modules(module: Any) -> Iterator[None]:
    """Every module's own floating parameters and buffers in float64 while its forward runs, and
    back to the very tensors they were afterwards (tied weights: converted once, restored once).
    Large Linear layers compute block by block, Embeddings look up in float32 (exact) and cast."""
    import torch

    held: dict[int, list] = {}  # id(tensor) -> [tensor, original data, depth]
    special: list[Any] = []  # modules whose forward is replaced for the duration

    def convert(mod, *_):
        if mod in special_set:
            return
        for t in list(mod.parameters(recurse=False)) + list(mod.buffers(recurse=False)):
            if not t.is_floating_point() or t.dtype == torch.float64:
                continue
            entry = held.get(id(t))
            if entry is None:
                held[id(t)] = [t, t.data, 1]
                t.data = t.data.to(torch.float64)
            else:
                entry[2] += 1

    def restore(mod, *_):
        if mod in special_set:
            return
        for t in list(mod.parameters(recurse=False)) + list(mod.buffers(recurse=False)):
            entry = held.get(id(t))
            if entry is None:
                continue
            entry[2] -= 1
            if entry[2] == 0:
                t.data = entry[1]
                del held[id(t)]

    handles = []
    for mod in module.modules():
        if isinstance(mod, torch.nn.Linear) and mod.weight.numel() * 8 > BLOCK_BYTES and "forward" not in vars(mod):
            mod.forward = _blockwise_linear(mod)
            special.append(mod)
        elif isinstance(mod, torch.nn.Embedding):
            handles.append(mod.register_forward_hook(
                lambda m, args, out: out.to(torch.float64) if out.is_floating_point() else out))
            special.append(mod)
        elif any(True for _ in mod.parameters(recurse=False)) or any(True for _ in mod.buffers(recurse=False)):
            handles.append(mod.register_forward_pre_hook(convert))
            handles.append(mod.register_forward_hook(restore, always_call=True))
    special_set = set(special)
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for mod in special:
            vars(mod).pop("forward", None)
        for t, original, _ in held.values():  # a forward that raised half-way
            t.data = original
        held.clear()


def _blockwise_linear(mod: Any):
    """`mod`'s forward in float64, its weight converted one block of output rows at a time."""
    import torch
    import torch.nn.functional as F

    def forward(x):
        x = x.to(torch.float64)
        w, b = mod.weight, mod.bias
        rows = max(1, BLOCK_BYTES // (w.shape[1] * 8))
        block = torch.empty((min(rows, w.shape[0]), w.shape[1]), dtype=torch.float64)  # one buffer, reused
        parts = []
        for i in range(0, w.shape[0], rows):
            part = block[:min(rows, w.shape[0] - i)]
            part.copy_(w[i:i + rows])
            parts.append(F.linear(x, part, None if b is None else b[i:i + rows].to(torch.float64)))
        return torch.cat(parts, dim=-1)

    return forward


def float64_outputs(module: Any, tensors: Sequence[Any]) -> tuple[list[np.ndarray] | None, str | None]:
    """The module's outputs computed in float64 (flattened in the exporter's order), or (None,
    why) when it cannot run in float64. Layer by layer first; a forward that reads another
    module's weights outside that module's own forward (`F.linear(x, self.fc.weight)`) then gets
    a float64 copy of the whole model when it is small enough to hold twice."""
    import copy

    import torch

    from onnxtax.core.inputs import flatten_outputs

    args = [t.to(torch.float64) if t.is_floating_point() else t for t in tensors]

    def flat(result: Any) -> list[np.ndarray]:
        return [t.detach().to(torch.float64).cpu().numpy() if t.is_floating_point() else t.detach().cpu().numpy()
                for _, t in flatten_outputs(result)]

    try:
        with torch.no_grad(), float64_modules(module):
            return flat(module(*args)), None
    except Exception as exc:  # noqa: BLE001 - an op without a float64 kernel, a dtype check in forward()
        first = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:200]
    finally:
        release_freed_memory()
    weights = sum(t.numel() * t.element_size() for t in module.state_dict(keep_vars=True).values())
    if weights > WHOLE_COPY_BYTES:
        return None, f"the model does not run in float64 layer by layer ({first})"
    try:
        with torch.no_grad():
            return flat(copy.deepcopy(module).to(torch.float64)(*args)), None
    except Exception as exc:  # noqa: BLE001
        return None, f"the model does not run in float64 ({type(exc).__name__}: {str(exc).strip()[:160]})"


def release_freed_memory() -> None:
    """Give the float64 run's freed blocks back to the system (glibc keeps freed heap blocks of a
    few MB in the process: measured 40-170 MB kept after a 100 MB model's run, stacked under the
    ORT sessions opened next). Elsewhere, nothing to do."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


# A model up to this size may be copied whole to float64 when layer-by-layer conversion fails.
WHOLE_COPY_BYTES = 256 * 2**20


def relative_noise(eager: Sequence[Any], exact: Sequence[Any] | None) -> list[float | None]:
    """Per output: RMS(eager - float64) / RMS(eager) over finite elements; None for integer
    outputs, outputs that are all zero, and when there is no float64 run."""
    from onnxtax.core.compare import rms

    out: list[float | None] = []
    for i, e in enumerate(eager):
        e = np.asarray(e)
        if exact is None or i >= len(exact) or e.dtype.kind not in "fc" or e.shape != np.asarray(exact[i]).shape:
            out.append(None)
            continue
        meter = NoiseMeter()
        meter.add(e, exact[i])
        scale = rms([e])
        out.append(meter.rms / scale if meter.rms is not None and scale > 0 else None)
    return out


class NoiseMeter:
    """Running RMS of (eager - float64) of one output over the samples of one shape; numbers only."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0
        self.missing = False

    def add(self, eager: Any, exact: Any | None) -> None:
        if exact is None:
            self.missing = True
            return
        a, b = np.asarray(eager), np.asarray(exact)
        if a.dtype.kind not in "fc" or a.shape != b.shape:
            return
        d = a.astype(np.float64) - b.astype(np.float64)
        d = d[np.isfinite(d)]
        self.total += float(np.dot(d.ravel(), d.ravel()))
        self.count += int(d.size)

    @property
    def rms(self) -> float | None:
        if self.missing or not self.count:
            return None
        return math.sqrt(self.total / self.count)


NOISE_SAMPLES = 3  # one per input scale of the random samples (1, 0.1, 10: onnxtax.core.specs)


def largest_noise(measured: Sequence[Sequence[float | None]]) -> list[float | None]:
    """Per output, the largest noise over several samples' measurements (None where none was measured)."""
    if not measured:
        return []
    out: list[float | None] = []
    for values in zip(*measured):
        known = [v for v in values if v is not None]
        out.append(max(known) if known else None)
    return out
