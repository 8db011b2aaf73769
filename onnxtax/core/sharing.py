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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from onnxtax.core.artifact import Artifact, open_artifact
from onnxtax.core.skeleton import StoredTensor


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

    def to_dict(self) -> dict:
        return {"shared_tensors": len(self.shared), "shared_bytes": self.shared_bytes,
                "not_shared_tensors": len(self.not_shared), "not_shared_bytes": self.not_shared_bytes,
                "not_shared": dict(list(self.not_shared.items())[:20])}

    def note(self) -> str:
        text = (f"weights shared with the eager model: {len(self.shared)} tensors, {_gb(self.shared_bytes)} "
                "(the ONNX bytes were checked equal to the parameters before sharing; ORT pre-packing off)")
        if self.not_shared:
            reasons = sorted(set(self.not_shared.values()))
            text += (f"; {len(self.not_shared)} tensor(s) ({_gb(self.not_shared_bytes)}) loaded from the file: "
                     + "; ".join(reasons[:3]))
        return text


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} bytes"


def _same_bytes(stored: StoredTensor, array: Any, chunk: int = 1 << 22) -> bool:
    """The file's bytes of `stored` equal `array`'s, read in chunks (never the whole tensor at once)."""
    import numpy as np

    view = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    if stored.length != view.size:
        return False
    with open(stored.file, "rb") as f:
        f.seek(stored.offset)
        pos = 0
        while pos < view.size:
            data = f.read(min(chunk, view.size - pos))
            if not data or not np.array_equal(np.frombuffer(data, np.uint8), view[pos:pos + len(data)]):
                return False
            pos += len(data)
    return True


def _module_tensors(module: Any) -> dict[str, Any]:
    tensors = {}
    for name, t in module.state_dict(keep_vars=True).items():
        tensors.setdefault(name, t)
    return tensors


def match_weights(tensors: dict[str, StoredTensor], module: Any, written: WrittenFrom | None = None
                  ) -> tuple[Sharing, dict[str, Any]]:
    """(what is shared and why not the rest, {initializer name: numpy array over the module's memory}).
    A tensor that `written` wrote from the parameter's own memory, unchanged since, is not read back."""
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
            reason = "no parameter or buffer of the eager model has that name"
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
                        or _same_bytes(stored, array)):
                    reason = "its bytes differ from the parameter's (folded or rewritten at export)"
        if reason is None:
            sharing.shared.append(name)
            sharing.shared_bytes += size
            arrays[name] = array
        else:
            sharing.not_shared[name] = reason
            sharing.not_shared_bytes += size
    return sharing, arrays


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

    def changed(self) -> list[str]:
        """Shared parameters changed in place since they were shared (their version counter
        moved): the session read values the exported file does not hold."""
        return [name for name, (tensor, version) in self.versions.items() if tensor._version != version]

    def open(self, request: Any = None, **session_kwargs) -> Any:
        from onnxtax.core.providers import open_session

        session = open_session(self.path, request, model_bytes=self.model_bytes,
                               shared_initializers=(self.names, self.values), **session_kwargs)
        session._onnxtax_shared_weights = self  # ORT keeps raw pointers into these buffers
        return session


def share_weights(artifact: str | Path | Artifact, module: Any, written: WrittenFrom | None = None) -> SharedWeights:
    """Match the ONNX initializers with the module's parameters (see the module docstring)."""
    import onnxruntime as ort

    artifact = open_artifact(artifact)
    sharing, arrays = match_weights(artifact.tensors, module, written)
    # every large tensor keeps its reference to its bytes in the file: ORT never reads a shared
    # one (it takes the OrtValue) and reads each other one once into its own memory (their bytes
    # put back into the proto would be held twice while the session is created)
    model_bytes = artifact.graph.SerializeToString()
    names = list(arrays)
    values = [ort.OrtValue.ortvalue_from_numpy(arrays[n]) for n in names]
    params = _module_tensors(module)
    versions = {n: (params[n], params[n]._version) for n in names}
    return SharedWeights(artifact.path, sharing, model_bytes, names, values, versions)
