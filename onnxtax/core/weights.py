"""An ONNX model's graph without its weights, and an ORT session on weights already in memory.

A stage that needs only the graph (names, types, nodes) should not read gigabytes of
weights, and parity should not hold them twice: the eager model already has every
parameter in memory, and for an export of it the ONNX initializers are the same bytes
under the same names (the dynamo exporter keeps `layers.0.weight`). `onnx.load` of a
model whose weights are inside the .onnx reads them all (`load_external_data=False`
only helps for external data); here the protobuf is walked over a memory map and the
large `raw_data` fields are skipped without being touched, so the pages never enter
memory.

Sharing (`share_weights`): every initializer whose name, dtype, shape AND bytes equal a
parameter or buffer of the eager module is handed to ONNX Runtime as an OrtValue over the
module's own buffer (`SessionOptions.add_initializer`, which ORT keeps by reference;
`add_external_initializers` copies the data in ORT 1.31, measured), and the proto given to
ORT carries no data for it. Bytes are compared in chunks straight from the file before
sharing: a transposed, folded or converted initializer is never replaced by a parameter that
merely has its name. (Export skips the comparison for a tensor it wrote from that very
parameter's memory, unchanged since: `WrittenWeights.unchanged`.) Pre-packing is off in such a session (ORT would otherwise keep a
second, re-laid-out copy of every MatMul/Gemm weight): kernels read the weights in their
stored layout, so results match a pre-packed session to FP32 rounding, not bit for bit.
Only the CPU provider shares; other providers compile or copy weights into their own memory
and load the file as usual.

Writing (`write_exported_weights`, `write_model`): export writes the exporter's weights once,
from their own memory, hashing while writing; then a model whose weights are external
references is written with the weights streamed from their files (or the one data file
moved into place and its checksum continued), and the sha256 of each file taken while writing.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

# Tensors smaller than this stay in the proto: shape inference may need their values (shape
# constants), and small ones cost nothing.
SHARE_MIN_BYTES = 4096

# protobuf field numbers (onnx.proto)
_MODEL_GRAPH = 7
_GRAPH_INITIALIZER = 5
_TENSOR_DIMS, _TENSOR_DATA_TYPE, _TENSOR_NAME, _TENSOR_RAW_DATA = 1, 2, 8, 9
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 13, 14


# --------------------------------------------------------------------------- protobuf wire format


def _varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated protobuf: a varint runs past the end")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _put_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(buf, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(field number, wire type, start of the field's tag, start of its payload, end) of each field."""
    pos = start
    while pos < end:
        tag_at = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos2 = _varint(buf, pos)
            yield number, wire, tag_at, pos, pos2
            pos = pos2
        elif wire == 1:
            yield number, wire, tag_at, pos, pos + 8
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise ValueError("truncated protobuf: a field runs past its message")
            yield number, wire, tag_at, pos, pos + length
            pos += length
        elif wire == 5:
            yield number, wire, tag_at, pos, pos + 4
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _len_field(number: int, payload: bytes) -> bytes:
    return _put_varint((number << 3) | 2) + _put_varint(len(payload)) + payload


@dataclass
class StoredTensor:
    """Where one top-level initializer's bytes are: inside the .onnx (raw_data) or in an external file."""

    name: str
    data_type: int
    dims: tuple[int, ...]
    file: Path
    offset: int
    length: int
    inline: bool  # raw_data inside the .onnx; else external data


@dataclass
class Skeleton:
    """The model proto without the data of its large initializers, and where that data is."""

    model: Any  # onnx.ModelProto; large inline tensors are external references to the .onnx itself
    path: Path
    tensors: dict[str, StoredTensor] = field(default_factory=dict)


def _tensor_header(buf, start: int, end: int) -> tuple[str, int, tuple[int, ...], tuple[int, int] | None,
                                                       dict[str, str], bool]:
    name, data_type, dims, raw, ext, external = "", 0, [], None, {}, False
    for number, wire, _, a, b in _fields(buf, start, end):
        if number == _TENSOR_NAME:
            name = bytes(buf[a:b]).decode("utf-8")
        elif number == _TENSOR_DATA_TYPE:
            data_type = _varint(buf, a)[0]
        elif number == _TENSOR_DIMS:
            if wire == 2:  # packed
                pos = a
                while pos < b:
                    v, pos = _varint(buf, pos)
                    dims.append(v)
            else:
                dims.append(_varint(buf, a)[0])
        elif number == _TENSOR_RAW_DATA:
            raw = (a, b)
        elif number == _TENSOR_EXTERNAL_DATA:
            key = value = ""
            for n2, _, _, a2, b2 in _fields(buf, a, b):
                if n2 == 1:
                    key = bytes(buf[a2:b2]).decode("utf-8")
                elif n2 == 2:
                    value = bytes(buf[a2:b2]).decode("utf-8")
            ext[key] = value
        elif number == _TENSOR_DATA_LOCATION:
            external = _varint(buf, a)[0] == 1
    return name, data_type, tuple(dims), raw, ext, external


def _external_ref(location: str, offset: int, length: int) -> bytes:
    out = b""
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        out += _len_field(_TENSOR_EXTERNAL_DATA, _len_field(1, key.encode()) + _len_field(2, value.encode()))
    return out + _put_varint((_TENSOR_DATA_LOCATION << 3) | 0) + _put_varint(1)


def read_skeleton(onnx_path: str | Path, *, min_bytes: int = SHARE_MIN_BYTES) -> Skeleton:
    """The model without the data of initializers of `min_bytes` or more, read without touching it.

    Inline tensors become external-data references to their own bytes inside the .onnx file
    (location = the file's name, offset and length of the raw_data payload), so anything that
    later needs their values (ORT, onnx.numpy_helper with a base dir) reads them from there.
    Nodes, subgraphs and small tensors are copied as they are."""
    import onnx

    path = Path(onnx_path)
    with open(path, "rb") as f:
        if path.stat().st_size == 0:  # protobuf reads it as an empty model; callers say what it lacks
            return Skeleton(onnx.ModelProto(), path)
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            buf = memoryview(mm)
            try:
                model_bytes, tensors = _rewrite_model(buf, path, min_bytes)
            finally:
                buf.release()
    model = onnx.ModelProto.FromString(model_bytes)
    return Skeleton(model, path, tensors)


def _rewrite_model(buf, path: Path, min_bytes: int) -> tuple[bytes, dict[str, StoredTensor]]:
    out = bytearray()
    tensors: dict[str, StoredTensor] = {}
    for number, wire, tag_at, a, b in _fields(buf, 0, len(buf)):
        if number != _MODEL_GRAPH or wire != 2:
            out += buf[tag_at:b]
            continue
        graph = bytearray()
        for n2, w2, t2, a2, b2 in _fields(buf, a, b):
            if n2 != _GRAPH_INITIALIZER or w2 != 2:
                graph += buf[t2:b2]
                continue
            name, data_type, dims, raw, ext, is_ext = _tensor_header(buf, a2, b2)
            if is_ext:
                location = path.parent / ext.get("location", "")
                tensors[name] = StoredTensor(name, data_type, dims, location, int(ext.get("offset", 0) or 0),
                                             int(ext["length"]) if ext.get("length") else -1, False)
                graph += buf[t2:b2]
            elif raw is not None and raw[1] - raw[0] >= min_bytes:
                tensor = bytearray()
                for n3, _, t3, _, b3 in _fields(buf, a2, b2):
                    if n3 != _TENSOR_RAW_DATA:
                        tensor += buf[t3:b3]
                tensor += _external_ref(path.name, raw[0], raw[1] - raw[0])
                tensors[name] = StoredTensor(name, data_type, dims, path, raw[0], raw[1] - raw[0], True)
                graph += _len_field(_GRAPH_INITIALIZER, bytes(tensor))
            else:
                graph += buf[t2:b2]
        out += _len_field(_MODEL_GRAPH, bytes(graph))
    return bytes(out), tensors


# --------------------------------------------------------------------------- sharing with the eager model


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


def match_weights(skeleton: Skeleton, module: Any, written: WrittenWeights | None = None
                  ) -> tuple[Sharing, dict[str, Any]]:
    """(what is shared and why not the rest, {initializer name: numpy array over the module's memory}).
    A tensor that `written` wrote from the parameter's own memory, unchanged since, is not read back."""
    import numpy as np
    from onnx import helper

    sharing = Sharing()
    arrays: dict[str, Any] = {}
    params = _module_tensors(module)
    for name, stored in skeleton.tensors.items():
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


def stored_weight_bytes(onnx_path: str | Path, *, min_bytes: int = SHARE_MIN_BYTES) -> int:
    """Bytes of the initializers of `min_bytes` or more, from the proto's headers (nothing is loaded)."""
    return sum(max(t.length, 0) for t in read_skeleton(onnx_path, min_bytes=min_bytes).tensors.values())


def share_weights(onnx_path: str | Path, module: Any, written: WrittenWeights | None = None) -> SharedWeights:
    """Match the ONNX initializers with the module's parameters (see the module docstring)."""
    import onnxruntime as ort

    skeleton = read_skeleton(onnx_path)
    sharing, arrays = match_weights(skeleton, module, written)
    # every large tensor keeps its reference to its bytes in the file: ORT never reads a shared
    # one (it takes the OrtValue) and reads each other one once into its own memory (their bytes
    # put back into the proto would be held twice while the session is created)
    model_bytes = skeleton.model.SerializeToString()
    del skeleton
    names = list(arrays)
    values = [ort.OrtValue.ortvalue_from_numpy(arrays[n]) for n in names]
    params = _module_tensors(module)
    versions = {n: (params[n], params[n]._version) for n in names}
    return SharedWeights(Path(onnx_path), sharing, model_bytes, names, values, versions)


# --------------------------------------------------------------------------- writing the exporter's weights from memory


@dataclass
class WrittenWeights:
    """A weights file written straight from tensors in memory: its checksum so far (continued
    by whoever appends to it) and, per initializer, the memory its bytes came from."""

    path: Path
    sha: Any  # hashlib sha256 object after the last byte written
    size: int
    origins: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # name -> (data_ptr, nbytes, version)

    def unchanged(self, name: str, tensor: Any) -> bool:
        """`tensor` is the very memory `name` was written from, not modified since (the same
        address and size, and its version counter, which every in-place op bumps, unchanged):
        the stored bytes equal it without reading them back."""
        origin = self.origins.get(name)
        return origin is not None and tensor.is_contiguous() and origin == _origin(tensor)


def _origin(tensor: Any) -> tuple[int, int, int]:
    return tensor.data_ptr(), tensor.numel() * tensor.element_size(), tensor._version


def _torch_bytes(tensor: Any) -> tuple[Any, Any] | None:
    """(a byte view of an exporter tensor's own memory, the torch tensor behind it), or None when
    the tensor is not a plain little-endian torch tensor whose bytes are its ONNX encoding."""
    import sys

    import torch

    raw = getattr(tensor, "raw", None)
    if not isinstance(raw, torch.Tensor) or sys.byteorder != "little" or tensor.dtype.bitwidth < 8:
        return None
    try:
        t = raw.detach()
        if t.device.type != "cpu" or t.is_sparse or t.is_quantized or type(t) is not torch.Tensor:
            return None
        t = t.contiguous()
        view = memoryview(t.reshape(-1).view(torch.uint8).numpy()) if t.numel() else memoryview(b"")
    except (RuntimeError, TypeError):
        return None
    return (view, t) if view.nbytes == tensor.nbytes else None


def write_exported_weights(model: Any, data_path: Path, *, min_bytes: int = SHARE_MIN_BYTES,
                           chunk: int = 1 << 24) -> WrittenWeights:
    """Write the initializers of `min_bytes` or more of an onnx_ir model (an ONNXProgram's) into
    `data_path`, and point the model at them, so that `onnx_ir.save` then writes the graph alone.

    Unlike ONNXProgram.save, each tensor is written from its own memory (no bytes copy of
    it), and the sha256 is taken in a second thread while the file is written, so the
    weights are neither copied in memory nor read back to be checksummed."""
    import hashlib
    import queue
    import threading

    import onnx_ir as ir

    sha = hashlib.sha256()
    pending: queue.Queue = queue.Queue(maxsize=4)

    def hash_in_order() -> None:
        while (piece := pending.get()) is not None:
            sha.update(piece)

    hasher = threading.Thread(target=hash_in_order, name="onnxtax-sha256", daemon=True)
    hasher.start()
    written = WrittenWeights(data_path, sha, 0)
    try:
        with open(data_path, "wb") as f:
            for value in model.graph.initializers.values():
                tensor = value.const_value
                if tensor is None or isinstance(tensor, ir.ExternalTensor) or tensor.nbytes < min_bytes:
                    continue
                found = _torch_bytes(tensor)
                view = memoryview(tensor.tobytes()) if found is None else found[0]
                offset = written.size
                for start in range(0, view.nbytes, chunk):
                    piece = view[start:start + chunk]
                    pending.put(piece)
                    f.write(piece)
                written.size += view.nbytes
                if found is not None:
                    written.origins[value.name] = _origin(found[1])
                value.const_value = ir.ExternalTensor(
                    data_path.name, offset, view.nbytes, tensor.dtype, shape=tensor.shape, name=value.name,
                    base_dir=str(data_path.parent))
    finally:
        pending.put(None)
        hasher.join()
    return written


# --------------------------------------------------------------------------- writing a model whose weights are files


def _external_refs(model: Any) -> list[tuple[Any, str, int, int]]:
    """(tensor, location, offset, length) of each top-level initializer kept as external data."""
    import onnx

    out = []
    for t in model.graph.initializer:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        ext = {e.key: e.value for e in t.external_data}
        out.append((t, ext.get("location", ""), int(ext.get("offset", 0) or 0), int(ext.get("length", -1) or -1)))
    return out


def data_bytes(model: Any) -> int:
    """Bytes of the model once its external weights are inside it (the proto itself plus their data)."""
    return model.ByteSize() + sum(max(length, 0) for *_, length in _external_refs(model))


class _HashingWriter:
    def __init__(self, f):
        import hashlib

        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def write(self, data) -> None:
        self.f.write(data)
        self.sha.update(data)
        self.size += len(data)


def _copy_range(src: Path, offset: int, length: int, out: _HashingWriter, chunk: int = 1 << 22) -> None:
    with open(src, "rb") as f:
        f.seek(offset)
        left = length
        while left > 0:
            data = f.read(min(chunk, left))
            if not data:
                raise ValueError(f"{src.name} ends before the tensor data it should hold")
            out.write(data)
            left -= len(data)


def write_model(model: Any, base: Path, path: Path, *, external: bool,
                written: WrittenWeights | None = None) -> tuple[dict[Path, str], Path]:
    """Write `model`, whose large initializers are external references relative to `base`, to `path`:
    inside the .onnx (the bytes streamed from their files into it, never held in memory) or
    into one `PATH.data` beside it (the source file moved there when it is the only one and
    sits in the same folder tree, else copied). Returns ({file: sha256}, the folder the
    model's references are now relative to). Checksums are taken while writing; a moved file
    that `written` describes (as written, not changed since) continues its checksum instead of
    being read again."""
    import onnx

    refs = _external_refs(model)
    digests: dict[Path, str] = {}
    data_path = path.with_name(path.name + ".data")
    if external:
        sources = {(base / loc).resolve() for _, loc, _, _ in refs}
        # the exporter's one weights file becomes ours: no copy of gigabytes (weights inside a
        # model file are copied out instead: that file holds the graph's bytes too)
        moved = (len(sources) == 1 and next(iter(sources)).suffix != ".onnx"
                 and all(length >= 0 for *_, length in refs))
        running = None
        if moved:
            (src,) = sources
            if (written is not None and written.path.resolve() == src and src.stat().st_size == written.size):
                running = written.sha.copy()
            if src != data_path.resolve():
                src.replace(data_path)
            for t, _, _, _ in refs:
                _set_external(t, data_path.name, None, None)
        with open(data_path, "ab" if moved else "wb") as f:
            out = _HashingWriter(f)
            if running is not None:
                out.sha = running
            start_of_file = f.tell()
            if not moved:
                for t, loc, offset, length in refs:
                    start = out.size
                    _copy_range(base / loc, offset, length, out)
                    _set_external(t, data_path.name, start, out.size - start)
            for t in model.graph.initializer:  # small tensors left inline: every weight in the one file
                if t.data_location == onnx.TensorProto.EXTERNAL or t.data_type == onnx.TensorProto.STRING:
                    continue
                data = _raw_bytes(t)
                start = start_of_file + out.size
                out.write(data)
                _set_external(t, data_path.name, start, len(data))
        if moved and running is None:
            from onnxtax.core.files import sha256_file

            digests[data_path] = sha256_file(data_path)  # once, after the small tensors were appended
        else:
            digests[data_path] = out.sha.hexdigest()
        with open(path, "wb") as f:
            out = _HashingWriter(f)
            out.write(model.SerializeToString())
        digests[path] = out.sha.hexdigest()
        return digests, path.parent
    # inline: the proto with each external tensor's bytes spliced in as raw_data
    inline = {id(t): (loc, offset, length) for t, loc, offset, length in refs}
    pieces: list[bytes | tuple[Path, int, int]] = []
    for field_desc, value in model.ListFields():
        if field_desc.number != _MODEL_GRAPH:
            pieces.append(_encode_field(model, field_desc.name))
            continue
        graph_pieces: list[bytes | tuple[Path, int, int]] = []
        for gfield, gvalue in value.ListFields():
            if gfield.number != _GRAPH_INITIALIZER:
                graph_pieces.append(_encode_field(value, gfield.name))
                continue
            for t in gvalue:
                where = inline.get(id(t))
                if where is None:
                    graph_pieces.append(_len_field(_GRAPH_INITIALIZER, t.SerializeToString()))
                    continue
                loc, offset, length = where
                header = onnx.TensorProto()
                header.CopyFrom(t)
                del header.external_data[:]
                header.ClearField("data_location")
                head = header.SerializeToString() + _put_varint((_TENSOR_RAW_DATA << 3) | 2) + _put_varint(length)
                graph_pieces.append(_put_varint((_GRAPH_INITIALIZER << 3) | 2) + _put_varint(len(head) + length)
                                    + head)
                graph_pieces.append(((base / loc), offset, length))
        graph_len = sum(len(p) if isinstance(p, bytes) else p[2] for p in graph_pieces)
        pieces.append(_put_varint((_MODEL_GRAPH << 3) | 2) + _put_varint(graph_len))
        pieces.extend(graph_pieces)
    with open(path, "wb") as f:
        out = _HashingWriter(f)
        for p in pieces:
            if isinstance(p, bytes):
                out.write(p)
            else:
                _copy_range(p[0], p[1], p[2], out)
    digests[path] = out.sha.hexdigest()
    if data_path.exists():
        data_path.unlink()
    return digests, base


def _set_external(tensor: Any, location: str, offset: int | None, length: int | None) -> None:
    """Point `tensor` at LOCATION (and OFFSET/LENGTH when given, else its current ones)."""
    import onnx

    old = {e.key: e.value for e in tensor.external_data}
    values = {"location": location,
              "offset": str(offset) if offset is not None else old.get("offset", "0"),
              "length": str(length) if length is not None else old.get("length", "")}
    del tensor.external_data[:]
    for key, value in values.items():
        if value != "":
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    tensor.data_location = onnx.TensorProto.EXTERNAL


def _raw_bytes(tensor: Any) -> bytes:
    """An inline tensor's bytes as raw_data holds them; its data fields are cleared."""
    from onnx import numpy_helper

    if tensor.HasField("raw_data"):
        data = tensor.raw_data
    else:
        data = numpy_helper.to_array(tensor).tobytes()
    for name in ("raw_data", "float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data"):
        tensor.ClearField(name)
    return data


def _encode_field(message: Any, name: str) -> bytes:
    """One field of a message, serialized alone (a copy holding only that field)."""
    single = type(message)()
    value = getattr(message, name)
    if hasattr(value, "extend"):  # a repeated field
        getattr(single, name).extend(value)
    elif hasattr(value, "CopyFrom"):
        getattr(single, name).CopyFrom(value)
    else:
        setattr(single, name, value)
    return single.SerializeToString()
