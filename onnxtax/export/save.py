"""Writing an exported model: the exporter's weights once, from their own memory, and the
model with its weights inside the .onnx or in one `.data` file beside it.

Export writes the exporter's weights once, from their own memory, hashing while writing
(`write_exported_weights`); then a model whose weights are external references is written
with the weights streamed from their files (or the one data file moved into place and its
checksum continued), and the sha256 of each file taken while writing (`write_model`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxtax.core.skeleton import (GRAPH_INITIALIZER, MODEL_GRAPH, SHARE_MIN_BYTES, TENSOR_RAW_DATA, len_field,
                                   put_varint)


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
        if field_desc.number != MODEL_GRAPH:
            pieces.append(_encode_field(model, field_desc.name))
            continue
        graph_pieces: list[bytes | tuple[Path, int, int]] = []
        for gfield, gvalue in value.ListFields():
            if gfield.number != GRAPH_INITIALIZER:
                graph_pieces.append(_encode_field(value, gfield.name))
                continue
            for t in gvalue:
                where = inline.get(id(t))
                if where is None:
                    graph_pieces.append(len_field(GRAPH_INITIALIZER, t.SerializeToString()))
                    continue
                loc, offset, length = where
                header = onnx.TensorProto()
                header.CopyFrom(t)
                del header.external_data[:]
                header.ClearField("data_location")
                head = header.SerializeToString() + put_varint((TENSOR_RAW_DATA << 3) | 2) + put_varint(length)
                graph_pieces.append(put_varint((GRAPH_INITIALIZER << 3) | 2) + put_varint(len(head) + length)
                                    + head)
                graph_pieces.append(((base / loc), offset, length))
        graph_len = sum(len(p) if isinstance(p, bytes) else p[2] for p in graph_pieces)
        pieces.append(put_varint((MODEL_GRAPH << 3) | 2) + put_varint(graph_len))
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


# --------------------------------------------------------------------------- export's files


# Above this the protobuf cannot be serialised in one piece (2 GiB), so weights go to a sidecar.
EXTERNAL_DATA_THRESHOLD = 2_000_000_000


def save_program(program, path: Path):
    """The exporter's model to `path` with its weights in `PATH.data`, each written once from
    its own memory and checksummed on the way (ONNXProgram.save copies every tensor first)."""
    import onnx_ir as ir

    written = write_exported_weights(program.model, path.with_name(path.name + ".data"))
    ir.save(program.model, path)  # the graph alone: every large tensor is now a reference
    return written


def save(model, base: Path, path: Path, external: bool, written=None) -> tuple[dict[Path, str], Path]:
    """Write the model (its weights streamed from the files under `base`, checksums taken while
    writing); returns ({file: sha256}, the folder its weight references are now relative to)."""
    digests, base = write_model(model, base, path, external=external, written=written)
    data = path.with_name(path.name + ".data")
    if data in digests:
        if data.stat().st_size == 0:
            data.unlink()  # no empty sidecars
            del digests[data]
        else:
            # the exporter creates the sidecar owner-only (0600): a server running as another user
            # could load the model but not its weights. Same permissions as the model file.
            data.chmod(path.stat().st_mode & 0o777)
    return digests, base


def check_written(path: Path, external: bool) -> None:
    """onnx.checker's full check (strict shape inference) of the written file, without holding
    its weights: by path when they are external data (the checker then also checks that the
    data files are there, inside the model's folder); else on the graph read without them
    (by path, the checker would parse every weight inside the .onnx into memory): that graph,
    whose large tensors refer to their bytes inside the .onnx, is checked by path from a
    file beside it."""
    import onnx

    from onnxtax.core.skeleton import read_skeleton

    if external:
        onnx.checker.check_model(str(path), full_check=True)
        return
    graph_only = path.with_name(path.stem + ".graph-only.onnx")
    graph_only.write_bytes(read_skeleton(path).model.SerializeToString())
    try:
        onnx.checker.check_model(str(graph_only), full_check=True)
    finally:
        graph_only.unlink()


def needs_external(model) -> bool:
    try:
        return data_bytes(model) > EXTERNAL_DATA_THRESHOLD
    except Exception:  # noqa: BLE001 - protobuf refuses to size > 2 GiB messages on some builds
        return True
