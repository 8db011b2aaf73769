"""An ONNX model's graph without its weights' bytes, read without touching them.

A stage that needs only the graph (names, types, nodes) should not read gigabytes of
weights. `onnx.load` of a model whose weights are inside the .onnx reads them all
(`load_external_data=False` only helps for external data); here the protobuf is walked
over a memory map and the large `raw_data` fields are skipped without being touched, so
the pages never enter memory. Each skipped tensor becomes an external-data reference to
its own bytes (`StoredTensor`), which ORT and onnx can still read.

The protobuf wire helpers are public to the package: export writes models with them.
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
MODEL_GRAPH = 7
GRAPH_INITIALIZER = 5
TENSOR_DIMS, TENSOR_DATA_TYPE, TENSOR_NAME, TENSOR_RAW_DATA = 1, 2, 8, 9
TENSOR_EXTERNAL_DATA, TENSOR_DATA_LOCATION = 13, 14


# --------------------------------------------------------------------------- protobuf wire format
def varint(buf, pos: int) -> tuple[int, int]:
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


def put_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def fields_of(buf, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(field number, wire type, start of the field's tag, start of its payload, end) of each field."""
    pos = start
    while pos < end:
        tag_at = pos
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos2 = varint(buf, pos)
            yield number, wire, tag_at, pos, pos2
            pos = pos2
        elif wire == 1:
            yield number, wire, tag_at, pos, pos + 8
            pos += 8
        elif wire == 2:
            length, pos = varint(buf, pos)
            if pos + length > end:
                raise ValueError("truncated protobuf: a field runs past its message")
            yield number, wire, tag_at, pos, pos + length
            pos += length
        elif wire == 5:
            yield number, wire, tag_at, pos, pos + 4
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def len_field(number: int, payload: bytes) -> bytes:
    return put_varint((number << 3) | 2) + put_varint(len(payload)) + payload


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
    for number, wire, _, a, b in fields_of(buf, start, end):
        if number == TENSOR_NAME:
            name = bytes(buf[a:b]).decode("utf-8")
        elif number == TENSOR_DATA_TYPE:
            data_type = varint(buf, a)[0]
        elif number == TENSOR_DIMS:
            if wire == 2:  # packed
                pos = a
                while pos < b:
                    v, pos = varint(buf, pos)
                    dims.append(v)
            else:
                dims.append(varint(buf, a)[0])
        elif number == TENSOR_RAW_DATA:
            raw = (a, b)
        elif number == TENSOR_EXTERNAL_DATA:
            key = value = ""
            for n2, _, _, a2, b2 in fields_of(buf, a, b):
                if n2 == 1:
                    key = bytes(buf[a2:b2]).decode("utf-8")
                elif n2 == 2:
                    value = bytes(buf[a2:b2]).decode("utf-8")
            ext[key] = value
        elif number == TENSOR_DATA_LOCATION:
            external = varint(buf, a)[0] == 1
    return name, data_type, tuple(dims), raw, ext, external


def _external_ref(location: str, offset: int, length: int) -> bytes:
    out = b""
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        out += len_field(TENSOR_EXTERNAL_DATA, len_field(1, key.encode()) + len_field(2, value.encode()))
    return out + put_varint((TENSOR_DATA_LOCATION << 3) | 0) + put_varint(1)


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
    for number, wire, tag_at, a, b in fields_of(buf, 0, len(buf)):
        if number != MODEL_GRAPH or wire != 2:
            out += buf[tag_at:b]
            continue
        graph = bytearray()
        for n2, w2, t2, a2, b2 in fields_of(buf, a, b):
            if n2 != GRAPH_INITIALIZER or w2 != 2:
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
                for n3, _, t3, _, b3 in fields_of(buf, a2, b2):
                    if n3 != TENSOR_RAW_DATA:
                        tensor += buf[t3:b3]
                tensor += _external_ref(path.name, raw[0], raw[1] - raw[0])
                tensors[name] = StoredTensor(name, data_type, dims, path, raw[0], raw[1] - raw[0], True)
                graph += len_field(GRAPH_INITIALIZER, bytes(tensor))
            else:
                graph += buf[t2:b2]
        out += len_field(MODEL_GRAPH, bytes(graph))
    return bytes(out), tensors


def same_bytes(stored: StoredTensor, array: Any, chunk: int = 1 << 20) -> bool:
    """The file's bytes of `stored` equal `array`'s, read in chunks into one reused buffer (never the
    whole tensor at once: what this holds besides `array` is two chunks, the buffer and the comparison)."""
    import numpy as np

    view = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    if stored.length != view.size:
        return False
    buffer = bytearray(min(chunk, view.size))
    with open(stored.file, "rb", buffering=0) as f:
        f.seek(stored.offset)
        pos = 0
        while pos < view.size:
            n = f.readinto(memoryview(buffer)[:min(chunk, view.size - pos)])
            if not n or not np.array_equal(np.frombuffer(buffer, np.uint8, n), view[pos:pos + n]):
                return False
            pos += n
    return True


def stored_weight_bytes(onnx_path: str | Path, *, min_bytes: int = SHARE_MIN_BYTES) -> int:
    """Bytes of the initializers of `min_bytes` or more, from the proto's headers (nothing is loaded)."""
    return sum(max(t.length, 0) for t in read_skeleton(onnx_path, min_bytes=min_bytes).tensors.values())
