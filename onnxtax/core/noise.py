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


@contextmanager
def float64_modules(module: Any) -> Iterator[None]:
    """Every module's own floating parameters and buffers in float64 while its forward runs, and
    back to the very tensors they were afterwards (tied weights: converted once, restored once)."""
    import torch

    held: dict[int, list] = {}  # id(tensor) -> [tensor, original data, depth]

    def convert(mod, *_):
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
        if any(True for _ in mod.parameters(recurse=False)) or any(True for _ in mod.buffers(recurse=False)):
            handles.append(mod.register_forward_pre_hook(convert))
            handles.append(mod.register_forward_hook(restore, always_call=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for t, original, _ in held.values():  # a forward that raised half-way
            t.data = original
        held.clear()


def float64_outputs(module: Any, tensors: Sequence[Any]) -> list[np.ndarray] | None:
    """The module's outputs computed in float64 (flattened in the exporter's order), or None when
    it cannot run in float64."""
    import torch

    from onnxtax.core.inputs import flatten_outputs

    args = [t.to(torch.float64) if t.is_floating_point() else t for t in tensors]
    try:
        with torch.no_grad(), float64_modules(module):
            result = module(*args)
    except Exception:  # noqa: BLE001 - an op without a float64 kernel, a dtype check in forward()
        return None
    return [t.detach().to(torch.float64).cpu().numpy() if t.is_floating_point() else t.detach().cpu().numpy()
            for _, t in flatten_outputs(result)]


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
