"""An ORT session on weights already in memory: the eager model's parameters, shared.

Parity should not hold the weights twice: the eager model already has every parameter in
memory, and for an export of it the ONNX initializers are the same bytes under the same
names (the dynamo exporter keeps `layers.0.weight`).

Sharing (`share_weights`): every initializer whose name, dtype, shape AND bytes equal a
parameter or buffer of the eager module is handed to ONNX Runtime as an OrtValue over the
module's own buffer (`SessionOptions.add_initializer`, which ORT keeps by reference;
`add_external_initializers` copies the data in ORT 1.31, measured), and the proto given to
ORT carries no data for it. Bytes are compared in chunks straight from the file before
sharing: a transposed, folded or converted initializer is never replaced by a parameter that
merely has its name. (Export skips the comparison for a tensor it wrote from that very
parameter's memory, unchanged since: `written.unchanged`.) Pre-packing is off in such a
session (ORT would otherwise keep a second, re-laid-out copy of every MatMul/Gemm weight):
kernels read the weights in their stored layout, so results match a pre-packed session to
FP32 rounding, not bit for bit. Only the CPU provider shares; other providers compile or
copy weights into their own memory and load the file as usual.

With `transposed=True` (parity), an initializer the exporter stored transposed (MatMul weights of
a Linear on 3-D input: `val_N`, [in, out]) is shared too, once the graph and the bytes both say it
is a parameter transposed: the parameter then reads it through a transposed view
(onnxtax.core.transposed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from onnxtax.core.artifact import Artifact, open_artifact
from onnxtax.core.skeleton import StoredTensor, same_bytes
from onnxtax.core.transposed import TransposedViews, matmul_readers, share_transposed

NO_NAME = "no parameter or buffer of the eager model has that name"


class WrittenFrom(Protocol):
    """What export knows of the bytes it wrote (export.save.WrittenWeights)."""

    def unchanged(self, name: str, tensor: Any) -> bool: ...


@dataclass
class Sharing:
    """What a session shares with the eager model, and why the rest is not shared."""

    shared: list[str] = field(default_factory=list)
    shared_bytes: int = 0
    not_shared: dict[str, str] = field(default_factory=dict)  # name -> reason
    not_shared_bytes: int = 0
    transposed: dict[str, str] = field(default_factory=dict)  # shared initializer -> the parameter it is, transposed
    transposed_bytes: int = 0

    def to_dict(self) -> dict:
        return {"shared_tensors": len(self.shared), "shared_bytes": self.shared_bytes,
                "transposed_tensors": len(self.transposed), "transposed_bytes": self.transposed_bytes,
                "transposed": dict(list(self.transposed.items())[:20]),
                "not_shared_tensors": len(self.not_shared), "not_shared_bytes": self.not_shared_bytes,
                "not_shared": dict(list(self.not_shared.items())[:20])}

    def note(self) -> str:
        text = (f"weights shared with the eager model: {len(self.shared)} tensors, {_gb(self.shared_bytes)} "
                "(the ONNX bytes were checked equal to the parameters before sharing; ORT pre-packing off)")
        if self.transposed:
            text += (f"; {len(self.transposed)} of them ({_gb(self.transposed_bytes)}) stored transposed by the "
                     "exporter: the eager model reads those parameters through transposed views of the same memory")
        if self.not_shared:
            reasons = sorted(set(self.not_shared.values()))
            text += (f"; {len(self.not_shared)} tensor(s) ({_gb(self.not_shared_bytes)}) loaded from the file: "
                     + "; ".join(reasons[:3]))
        return text


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} bytes"


def _module_tensors(module: Any) -> dict[str, Any]:
    tensors = {}
    for name, t in module.state_dict(keep_vars=True).items():
        tensors.setdefault(name, t)
    return tensors


def match_weights(tensors: dict[str, StoredTensor], module: Any, written: WrittenFrom | None = None, *,
                  graph: Any = None, views: TransposedViews | None = None) -> tuple[Sharing, dict[str, Any]]:
    """(what is shared and why not the rest, {initializer name: numpy array over the module's memory}).
    A tensor that `written` wrote from the parameter's own memory, unchanged since, is not read back.
    With `graph` (the proto read without its weights) and `views`, an initializer the exporter
    stored transposed is shared too (onnxtax.core.transposed): the parameter then reads it
    through a transposed view, recorded in `views`."""
    import numpy as np
    from onnx import helper

    sharing = Sharing()
    arrays: dict[str, Any] = {}
    params = _module_tensors(module)
    for name, stored in tensors.items():
        size = max(stored.length, 0)
        t = params.get(name)
        reason = None
        if t is None:
            reason = NO_NAME
        elif t.device.type != "cpu" or t.is_sparse or t.is_quantized:
            reason = "the parameter is not a dense CPU tensor"
        elif not t.is_contiguous():
            reason = "the parameter is not contiguous in memory"
        else:
            try:
                dtype = np.dtype(helper.tensor_dtype_to_np_dtype(stored.data_type))
                array = t.detach().numpy()
            except (TypeError, KeyError, RuntimeError):
                reason = "its dtype has no NumPy equivalent"
            else:
                if array.dtype != dtype or tuple(array.shape) != stored.dims:
                    reason = (f"the ONNX tensor is {dtype}{list(stored.dims)}, the parameter "
                              f"{array.dtype}{list(array.shape)} (transposed or converted at export)")
                elif stored.length < 0 or not (
                        (written is not None and stored.length == array.nbytes and written.unchanged(name, t))
                        or same_bytes(stored, array)):
                    reason = "its bytes differ from the parameter's (folded or rewritten at export)"
        if reason is None:
            sharing.shared.append(name)
            sharing.shared_bytes += size
            arrays[name] = array
        else:
            sharing.not_shared[name] = reason
            sharing.not_shared_bytes += size
    if graph is not None and views is not None:
        _match_transposed(tensors, params, graph, views, sharing, arrays)
    return sharing, arrays


def _match_transposed(tensors: dict[str, StoredTensor], params: dict[str, Any], graph: Any, views: TransposedViews,
                      sharing: Sharing, arrays: dict[str, Any]) -> None:
    """The second pass: initializers not shared by name that a MatMul of a parameter's module reads."""
    readers = matmul_readers(graph)
    claimed = {id(params[n]) for n in sharing.shared if n in params}  # their memory is ORT's as it is
    for name in [n for n in sharing.not_shared if n in readers]:
        stored = tensors[name]
        param, array, why = share_transposed(stored, readers[name], params, claimed, views)
        size = max(stored.length, 0)
        if param is None:
            if why is not None:
                sharing.not_shared[name] = why
            continue
        del sharing.not_shared[name]
        sharing.not_shared_bytes -= size
        sharing.shared.append(name)
        sharing.shared_bytes += size
        sharing.transposed[name] = param
        sharing.transposed_bytes += size
        arrays[name] = array


@dataclass
class SharedWeights:
    """The eager module's weights prepared for ORT sessions: one proto, one set of OrtValues,
    reused by every session parity opens (the fresh-session rechecks too)."""

    path: Path
    sharing: Sharing
    model_bytes: bytes
    names: list[str]
    values: list[Any]  # OrtValues over the module's parameter memory: keep the module alive
    versions: dict[str, tuple[Any, int]] = field(default_factory=dict)  # name -> (parameter, version when shared)
    views: TransposedViews = field(default_factory=TransposedViews)  # parameters now read through transposed views

    def changed(self) -> list[str]:
        """Shared parameters changed in place since they were shared (their version counter
        moved): the session read values the file does not hold. A parameter shared through
        a transposed view is named with the initializer it is."""
        return [name if name not in self.sharing.transposed else f"{self.sharing.transposed[name]} (as {name})"
                for name, (tensor, version) in self.versions.items() if tensor._version != version]

    def open(self, request: Any = None, **session_kwargs) -> Any:
        from onnxtax.core.providers import open_session

        session = open_session(self.path, request, model_bytes=self.model_bytes,
                               shared_initializers=(self.names, self.values), **session_kwargs)
        session._onnxtax_shared_weights = self  # ORT keeps raw pointers into these buffers
        return session


def share_weights(artifact: str | Path | Artifact, module: Any, written: WrittenFrom | None = None, *,
                  transposed: bool = False) -> SharedWeights:
    """Match the ONNX initializers with the module's parameters (see the module docstring).
    `transposed`: also share the initializers the exporter stored transposed, through transposed
    views of the module's parameters (onnxtax.core.transposed; the module's layout changes until
    `SharedWeights.views.restore()`)."""
    import onnxruntime as ort

    artifact = open_artifact(artifact)
    views = TransposedViews()
    try:
        sharing, arrays = match_weights(artifact.tensors, module, written,
                                        graph=artifact.graph if transposed else None, views=views)
    except BaseException:
        views.restore()  # the module as it was: nothing is shared
        raise
    # every large tensor keeps its reference to its bytes in the file: ORT never reads a shared
    # one (it takes the OrtValue) and reads each other one once into its own memory (their bytes
    # put back into the proto would be held twice while the session is created)
    model_bytes = artifact.graph.SerializeToString()
    names = list(arrays)
    values = [ort.OrtValue.ortvalue_from_numpy(arrays[n]) for n in names]
    params = _module_tensors(module)
    owner = {n: sharing.transposed.get(n, n) for n in names}
    versions = {n: (params[owner[n]], params[owner[n]]._version) for n in names}
    return SharedWeights(artifact.path, sharing, model_bytes, names, values, versions, views)
