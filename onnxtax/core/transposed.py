"""Weights the exporter stored transposed, shared with the eager model through a transposed view.

For a Linear on a batch x seq x d input the dynamo exporter writes `MatMul(x, W^T)` with W^T
folded into a new initializer (`val_N`, shape [in, out]); the TorchScript exporter does the same
under `onnx::MatMul_N`. No initializer is then byte for byte a parameter, and sharing by name
(onnxtax.core.sharing) loads every such weight a second time.

Here an initializer is matched to a parameter W of the transposed shape only when

1. the graph says so: the initializer is the B input of a MatMul (or of a Gemm with transB=0:
   both compute x @ B, what Linear computes with B = W^T) whose node ran in the module that
   owns W (the dynamo exporter's `pkg.torch.onnx.name_scopes`, or the TorchScript exporter's
   node name `/blocks.0/fc1/MatMul`); a shape alone never matches;
2. the values say so: W^T is written into a new [in, out] array A (its own anonymous memory
   map) and A is compared with the file's bytes, bit for bit, 1 MB at a time, before anything
   is shared; one tensor's A is in memory beside W at a time.

Then W's data becomes a transposed view of A (`param.data = A.t()`): the ORT session
takes A as the initializer (an OrtValue over it, by reference) and the eager model reads W
through the view, the same memory; W's own memory is released. The values are the file's and
W's (compared equal); what changes for the eager model is the layout its GEMMs read: with torch
2.13's MKL, outputs are bit-identical from 12 rows (batch x seq) up and at 4 and 8 rows; at the
other row counts below 12 MKL's small-matrix path rounds 2-3x more through the view
(docs/large-models.md, benchmarks/transposed_views.py). An in-place write to W still moves W's
version counter (a view shares it), which parity checks. `TransposedViews.restore` gives the parameters contiguous memory of
their own again (parity does, before it returns).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

from onnxtax.core.skeleton import StoredTensor, same_bytes

NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


def module_of(node: Any) -> str | None:
    """The module path a node ran in ('' = the root's own forward), None when the graph does not say.
    Dynamo: the last module of `pkg.torch.onnx.name_scopes` (its last entry is the FX node itself);
    TorchScript: the node's name, '/layers.0/linear/MatMul' ('/net/net.0/Gemm' for Sequential)."""
    props = {p.key: p.value for p in node.metadata_props}
    raw = props.get(NAME_SCOPES_KEY)
    if raw is not None:
        try:
            scopes = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return None
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            return None
        return scopes[-2] if len(scopes) > 1 else ""
    if node.name.startswith("/"):
        path = ""
        for part in node.name.strip("/").split("/")[:-1]:
            path = part if (not path or part.startswith(path + ".")) else f"{path}.{part}"
        return path
    return None


def matmul_readers(graph: Any) -> dict[str, set[str]]:
    """{initializer name: module paths of the top-level MatMul nodes (and Gemm with transB=0)
    that read it as their B input}."""
    initializers = {t.name for t in graph.graph.initializer}
    readers: dict[str, set[str]] = {}
    for node in graph.graph.node:
        if node.domain not in ("", "ai.onnx") or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        if node.op_type == "Gemm":
            if any(a.name == "transB" and a.i != 0 for a in node.attribute):
                continue
        elif node.op_type != "MatMul":
            continue
        path = module_of(node)
        if path is not None:
            readers.setdefault(node.input[1], set()).add(path)
    return readers


@dataclass
class TransposedViews:
    """The parameters whose data became a transposed view of an initializer's array."""

    params: dict[str, Any] = field(default_factory=dict)  # parameter name -> the parameter
    arrays: dict[int, Any] = field(default_factory=dict)  # id(parameter) -> the [in, out] numpy array it views

    def restore(self) -> None:
        """Each parameter gets contiguous memory of its own again, one at a time (the array it
        viewed is freed when nothing else holds it: release the sessions and SharedWeights first)."""
        while self.params:
            _, param = self.params.popitem()
            param.data = param.data.contiguous()
            self.arrays.pop(id(param), None)


def _anonymous(rows: int, cols: int, dtype: Any) -> Any:
    """A [rows, cols] array in its own anonymous memory map: page-aligned, and its pages go back to
    the system as soon as nothing refers to it (memory from malloc would stay with the process
    when a restore frees it: measured, 1.8 GB of RSS for 0.8 GB of weights until malloc_trim)."""
    import mmap

    import numpy as np

    size = rows * cols * dtype.itemsize
    if hasattr(mmap, "MAP_PRIVATE"):  # not shared with a forked child
        buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    else:
        buffer = mmap.mmap(-1, size)
    return np.frombuffer(buffer, dtype=dtype).reshape(rows, cols)


def fill_transposed(stored: StoredTensor, weight: Any, out: Any) -> bool:
    """Write `weight`.T into `out` (a C-contiguous [in, out] array; torch's tiled transpose: about
    15 ms for 16 MB, where comparing through a strided view took 70-100 ms), then compare it with
    the file's bytes of `stored`, bit for bit, 1 MB at a time. False at the first difference."""
    import torch

    if stored.length != out.nbytes:
        return False
    torch.from_numpy(out).copy_(weight.detach().t())
    return same_bytes(stored, out)


def share_transposed(stored: StoredTensor, readers: set[str], params: dict[str, Any], claimed: set[int],
                     views: TransposedViews) -> tuple[str | None, Any, str | None]:
    """(parameter name, the [in, out] numpy array now shared by ORT and the parameter's view, None)
    for an initializer that is a parameter of a reading module transposed; else (None, None, why)."""
    import numpy as np
    import torch
    from onnx import helper

    if len(stored.dims) != 2 or stored.length < 0:
        return None, None, None
    rows, cols = stored.dims
    candidates = [(n, t) for n, t in params.items()
                  if n.rpartition(".")[0] in readers and tuple(t.shape) == (cols, rows)]
    if not candidates:
        return None, None, None
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(stored.data_type))
    except (TypeError, KeyError):
        return None, None, "its dtype has no NumPy equivalent"
    why = None
    # a parameter not yet viewed first: two initializers equal to one W^T share its one array
    for name, t in sorted(candidates, key=lambda c: id(c[1]) in views.arrays):
        if t.device.type != "cpu" or t.is_sparse or t.is_quantized or t.dim() != 2:
            why = why or f"{name} is not a dense CPU matrix"
            continue
        if id(t) in claimed:
            why = why or f"{name} is shared as it is under its own name"
            continue
        try:
            same_dtype = t.detach().numpy().dtype == dtype
        except (TypeError, RuntimeError):  # bfloat16 and others NumPy cannot hold
            same_dtype = False
        if not same_dtype:
            why = why or f"the ONNX tensor is {dtype}, {name} {t.dtype}"
            continue
        if id(t) in views.arrays:  # already a view of an array equal to W^T
            array = views.arrays[id(t)]
            if same_bytes(stored, array):
                return name, array, None
            why = why or f"its bytes differ from {name} transposed"
            continue
        if not t.is_contiguous():
            if t.t().is_contiguous():  # already a transposed view (of an earlier sharing): its memory is W^T
                array = t.detach().t().numpy()
                if same_bytes(stored, array):
                    return name, array, None
                why = why or f"its bytes differ from {name} transposed"
            else:
                why = why or f"{name} is not contiguous in memory"
            continue
        array = _anonymous(rows, cols, dtype)
        if not fill_transposed(stored, t, array):
            why = why or f"its bytes differ from {name} transposed"
            continue
        t.data = torch.from_numpy(array).t()  # the parameter's own memory is released here
        views.params[name] = t
        views.arrays[id(t)] = array
        return name, array, None
    return None, None, why
