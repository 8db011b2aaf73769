"""An exported model, opened once: what every stage reads of an artifact.

Parity, lint-ops, bench, quantize and the runtime matrix all need the same facts about an
`.onnx`: the manifest beside it, its graph (nodes, inputs, outputs) without the weights'
bytes, where each large weight's bytes are, the export-time size of each dynamic axis,
the ranges torch.export assumed, the weights' size. `open_artifact` reads them once, and
the stages take the Artifact as they take a LoadedModel; `onnxtax ci` opens each artifact
once for all its stages.

The graph side has one reader of graph inputs (one dim-naming rule, `axis_name`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxtax.core.errors import InputSpecError, LoadError, ManifestError
from onnxtax.core.manifest import assumed_ranges_of, export_sizes_of, manifest_path_for, read_manifest
from onnxtax.core.skeleton import StoredTensor, read_skeleton
from onnxtax.core.specs import DTYPES, ONNX_TO_DTYPE, InputSpec

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class Artifact:
    """An `.onnx` and what lies beside it, read once. `graph` is the ModelProto without the
    bytes of its large initializers (each is an external reference to where its bytes are:
    `tensors`); `manifest` is None for a file onnxtax did not write."""

    path: Path
    graph: Any  # onnx.ModelProto
    tensors: dict[str, StoredTensor] = field(default_factory=dict)
    manifest: dict | None = None
    output_names: list[str] = field(default_factory=list)
    weights_bytes: int = 0  # every initializer's bytes, from the proto's headers
    manifest_problem: str | None = None  # why a manifest beside the file was not read (tolerant opening only)

    @property
    def inputs(self) -> list[InputSpec]:
        """The graph's inputs (initializers excluded); an input type onnxtax cannot generate is an
        input error here, for the stages that feed the graph (lint-ops reads the graph without it)."""
        return graph_inputs(self.graph)

    @property
    def manifest_path(self) -> Path:
        return manifest_path_for(self.path)

    @property
    def declared_inputs(self) -> list[InputSpec] | None:
        """The inputs the model was exported with (from the manifest), in forward() order."""
        if self.manifest and self.manifest.get("inputs"):
            return [InputSpec.from_dict(d) for d in self.manifest["inputs"]]
        return None

    @property
    def export_sizes(self) -> dict[str, int]:
        return export_sizes_of(self.manifest)

    @property
    def assumed_ranges(self) -> dict[str, dict]:
        return assumed_ranges_of(self.manifest)

    @property
    def quantization(self) -> dict | None:
        """How `onnxtax quantize` built and approved this file (INT8 artifacts only)."""
        q = (self.manifest or {}).get("quantization")
        return q if isinstance(q, dict) else None

    def reread_manifest(self) -> None:
        """After a stage rewrote the manifest (bench --record, the runtime matrix)."""
        self.manifest = read_manifest(self.path, required=False)


def open_artifact(path: str | Path | Artifact, *, tolerate_manifest: bool = False) -> Artifact:
    """Read an artifact once: its graph without the weights' bytes, its manifest (when there is
    one), its inputs and outputs and its weights' size. A missing or unreadable file is an
    input error naming the file; so is an unreadable manifest, unless `tolerate_manifest`
    (lint-ops: a broken manifest is a note, not a reason to stop)."""
    if isinstance(path, Artifact):
        return path
    path = Path(path)
    if path.is_dir():
        raise LoadError(f"'{path}' is a folder, not an ONNX model", "point at the .onnx file inside it")
    if not path.is_file():
        raise LoadError(f"ONNX model '{path}' does not exist", "export it first with `onnxtax export`")
    try:
        skeleton = read_skeleton(path)
        model = skeleton.model
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError and friends
        refuse_not_a_model(path, LoadError)
        raise LoadError(f"'{path}' is not a readable ONNX model: {str(exc).splitlines()[0] if str(exc) else exc}",
                        "point at the .onnx file written by `onnxtax export`") from exc
    if not model.HasField("graph") or model.ir_version == 0:
        # protobuf parses an empty (or truncated-to-nothing) file as an empty model
        why = "the file is empty" if path.stat().st_size == 0 else "it has no graph or IR version"
        if path.stat().st_size:
            refuse_not_a_model(path, LoadError)
        raise LoadError(f"'{path}' is not an ONNX model: {why}", "point at the .onnx file written by `onnxtax export`")
    manifest, problem = None, None
    try:
        manifest = read_manifest(path, required=False)
    except ManifestError as exc:
        if not tolerate_manifest:
            raise
        problem = exc.message
    return Artifact(path, model, skeleton.tensors, manifest, graph_output_names(model),
                    _weights_bytes(model, skeleton.tensors), problem)


def refuse_not_a_model(path: str | Path, error: type = LoadError) -> None:
    """Raise `error` naming what a file given as the model is, when it is recognisably something
    else: the manifest (the fix names the model it describes), a data archive, JSON, text, Python.
    Returns when the file may be a model (a damaged one is for the caller to report)."""
    from onnxtax.core.files import MANIFEST_KIND, file_kind

    path = Path(path)
    kind = file_kind(path)
    if kind == MANIFEST_KIND or path.name.endswith(".manifest.json"):
        model = path.with_name(path.name[:-len(".manifest.json")] + ".onnx")
        try:
            import json

            listed = json.loads(path.read_text(encoding="utf-8"))["artifact"]["file"]
            if isinstance(listed, str) and listed and Path(listed).name == listed:
                model = path.with_name(listed)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # not readable as a manifest: the name says which model it goes with
        raise error(f"'{path}' is the manifest of {model.name}, not an ONNX model",
                    f"give the model it describes: {model}")
    if kind in (None, "an ONNX model", "a binary file", "an empty file"):
        return
    raise error(f"'{path}' is {kind}, not an ONNX model", "point at the .onnx file written by `onnxtax export`")


def load_graph(onnx_path: str | Path | Artifact):
    """The ONNX proto without its weights' data (what open_artifact reads)."""
    return open_artifact(onnx_path).graph


def _weights_bytes(model: Any, stored: dict[str, StoredTensor]) -> int:
    """The large initializers' bytes from their headers, plus the small ones left in the proto."""
    total = sum(max(t.length, 0) for t in stored.values())
    for t in model.graph.initializer:
        if t.name not in stored:
            total += len(t.raw_data) if t.HasField("raw_data") else t.ByteSize()
    return total


def dims_of(value_info) -> list[int | str | None]:
    """An ONNX value's dims as written: int (static), str (named), None (unnamed)."""
    dims: list[int | str | None] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(d.dim_value)
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dims


def dtype_of(value_info) -> str:
    """onnxtax's dtype name for an ONNX tensor value (`float32`, `int64`, ...)."""
    import onnx

    onnx_name = onnx.TensorProto.DataType.Name(value_info.type.tensor_type.elem_type)
    return ONNX_TO_DTYPE.get(onnx_name, onnx_name.lower())


def axis_name(input_name: str, axis: int, dim: int | str | None) -> int | str:
    """The one dim-naming rule: a positive size stays static; a dim_param that is an
    identifier keeps its name; anything else (unnamed, `s77*5`, `-1`) becomes INPUT_dimK."""
    if isinstance(dim, int) and dim > 0:
        return dim
    if isinstance(dim, str) and _IDENT.match(dim):
        return dim
    return f"{input_name}_dim{axis}"


def graph_inputs(model) -> list[InputSpec]:
    """The graph's real inputs (initializers excluded) as InputSpecs, dims named by `axis_name`."""
    initializers = {t.name for t in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        dtype = dtype_of(vi)
        if dtype not in DTYPES:
            raise InputSpecError(f"ONNX input '{vi.name}' has type {dtype}, which onnxtax cannot generate",
                                 f"supported input types: {', '.join(DTYPES)}")
        dims = tuple(axis_name(vi.name, k, d) for k, d in enumerate(dims_of(vi)))
        specs.append(InputSpec(vi.name, dims, dtype))
    return specs


def graph_output_names(model) -> list[str]:
    return [vo.name for vo in model.graph.output]
