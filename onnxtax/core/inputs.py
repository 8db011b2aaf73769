"""A model's inputs, worked out one way for every stage.

export, lint-ops, parity, bench and ci all need the same answers: which arrays the graph
takes (names, dtypes, which axes are dynamic and what they are called), which spec feeds
which graph input, the size each axis had at export time, and the torch tensors that the
eager model gets for the same arrays. When each stage worked them out alone, the same
artifact passed parity and was refused by bench. Here there is one reader of graph inputs
(one dim-naming rule), one matching rule, and one set of builders.

Kept free of torch and onnxruntime imports at module level; onnx and numpy are imported
where a graph is read or arrays are made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from onnxtax.core.errors import InputSpecError, LoadError
from onnxtax.core.specs import DTYPES, ONNX_TO_DTYPE, InputSpec, SampleRecipe, ValueRange, parse_input_specs, symbols_of

InputSource = Literal["arguments", "manifest", "onnx-graph"]
INPUT_SOURCES: tuple[InputSource, ...] = ("arguments", "manifest", "onnx-graph")

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --------------------------------------------------------------------------- the graph side


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


def load_graph(onnx_path: str | Path):
    """The ONNX proto without its weights' data, external or inside the .onnx (inputs, outputs
    and nodes are all a stage reads from it; onnxtax.core.weights.read_skeleton); a missing or
    unreadable file is an input error."""
    from onnxtax.core.weights import read_skeleton

    path = Path(onnx_path)
    if not path.is_file():
        raise LoadError(f"ONNX model '{path}' does not exist", "export it first with `onnxtax export`")
    try:
        model = read_skeleton(path).model
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError and friends
        raise LoadError(f"'{path}' is not a readable ONNX model: {str(exc).splitlines()[0] if str(exc) else exc}",
                        "point at the .onnx file written by `onnxtax export`") from exc
    if not model.HasField("graph") or model.ir_version == 0:
        # protobuf parses an empty (or truncated-to-nothing) file as an empty model
        why = "the file is empty" if path.stat().st_size == 0 else "it has no graph or IR version"
        raise LoadError(f"'{path}' is not an ONNX model: {why}", "point at the .onnx file written by `onnxtax export`")
    return model


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


# --------------------------------------------------------------------------- resolution


@dataclass
class ResolvedInputs:
    """What every stage feeds: specs in forward() order, where they came from, which graph
    input each feeds, the export-time size of each axis and the value range of each input."""

    specs: list[InputSpec]
    source: InputSource
    onnx_names: dict[str, str] = field(default_factory=dict)  # spec name -> graph input name
    export_sizes: dict[str, int] = field(default_factory=dict)
    ranges: dict[str, ValueRange] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    manifest: dict | None = None
    output_names: list[str] = field(default_factory=list)  # the graph's outputs, in order

    @property
    def symbols(self) -> list[str]:
        return symbols_of(self.specs)

    def feeds(self, arrays: Mapping[str, Any]) -> dict[str, Any]:
        """Arrays keyed by spec name -> the ONNX Runtime feed dict (graph names; inputs the
        graph dropped are left out)."""
        return {onnx_name: arrays[name] for name, onnx_name in self.onnx_names.items()}

    def to_dicts(self) -> list[dict]:
        """Per input: the range its values are drawn from (declared, or the name-based default
        for integers; None for floats' own scales) and, in words, which one it is."""
        recipe = SampleRecipe(0, self.ranges)
        out = []
        for s in self.specs:
            drawn = recipe.range_of(s)
            out.append(dict(s.to_dict(), onnx_name=self.onnx_names.get(s.name),
                            range=[drawn.low, drawn.high] if drawn is not None else None, domain=recipe.describe(s)))
        return out


def resolve_inputs(onnx_path: str | Path, given: Sequence[str | InputSpec] | ResolvedInputs | None = None, *,
                   ranges: Mapping[str, ValueRange | tuple[float, float]] | None = None,
                   graph=None) -> ResolvedInputs:
    """Specs from `given` (strings or InputSpecs), else the manifest beside the model, else
    the graph; matched to the graph's inputs by one rule (`match_graph`). `graph` is the
    proto if the caller has it already (read without external data otherwise)."""
    from onnxtax.core.manifest import export_sizes_of, read_manifest

    if isinstance(given, ResolvedInputs):
        return given
    model = graph if graph is not None else load_graph(onnx_path)
    manifest = read_manifest(onnx_path, required=False)
    in_graph = graph_inputs(model)
    source: InputSource
    if given:
        specs = parse_input_specs([str(s) for s in given])  # an InputSpec prints as a parseable spec
        source = "arguments"
    elif manifest and manifest.get("inputs"):
        specs = [InputSpec.from_dict(d) for d in manifest["inputs"]]
        source = "manifest"
    else:
        specs = in_graph
        source = "onnx-graph"
    notes: list[str] = []
    onnx_names = match_graph(specs, in_graph, notes)
    known = set(symbols_of(specs))
    export_sizes = {sym: size for sym, size in export_sizes_of(manifest).items() if sym in known}
    resolved = ResolvedInputs(specs, source, onnx_names, export_sizes, {}, notes, manifest,
                              graph_output_names(model))
    resolved.ranges = check_ranges(ranges, specs)
    return resolved


def check_ranges(ranges: Mapping[str, ValueRange | tuple[float, float]] | None, specs: list[InputSpec]
                 ) -> dict[str, ValueRange]:
    out = {k: (v if isinstance(v, ValueRange) else ValueRange(*v)) for k, v in (ranges or {}).items()}
    names = [s.name for s in specs]
    for name in out:
        if name not in names:
            raise InputSpecError(f"--range '{name}' names no input", f"inputs: {', '.join(names)}")
    return out


def match_graph(specs: list[InputSpec], graph: list[InputSpec], notes: list[str]) -> dict[str, str]:
    """spec name -> graph input name, the one rule every stage applies. By name when every
    graph input has a spec of that name (specs the graph lacks feed the eager model only: the
    exporter drops unused inputs); else by position when the counts agree; else an input
    error. dtypes, ranks and static sizes must agree; a declared dynamic axis the graph made
    static is a note (it will fail at other sizes, which the stage then shows)."""
    graph_names = [g.name for g in graph]
    spec_names = [s.name for s in specs]
    if set(graph_names) <= set(spec_names):
        mapping = {n: n for n in spec_names if n in graph_names}
        unused = [n for n in spec_names if n not in graph_names]
        if unused:
            notes.append(f"inputs {', '.join(unused)} go to the source model only: the ONNX graph has no such input "
                         "(the exporter drops inputs the graph does not use)")
    elif len(graph_names) == len(spec_names):
        mapping = dict(zip(spec_names, graph_names))
        notes.append("inputs matched to the ONNX graph by position: " +
                     ", ".join(f"{s} -> {o}" for s, o in mapping.items() if s != o))
    else:
        raise InputSpecError(f"inputs ({', '.join(spec_names)}) do not match the ONNX graph's inputs "
                             f"({', '.join(graph_names)})",
                             "name each --input after the graph input it feeds, in forward() order")
    by_name = {g.name: g for g in graph}
    specs_by_name = {s.name: s for s in specs}
    for spec_name, onnx_name in mapping.items():
        spec, g = specs_by_name[spec_name], by_name[onnx_name]
        if g.dtype != spec.dtype:
            raise InputSpecError(f"input '{spec_name}' is {spec.dtype} but the ONNX graph takes {g.dtype} "
                                 f"('{onnx_name}')", f"declare it as {spec_name}:...:{g.dtype}")
        if len(g.dims) != len(spec.dims):
            raise InputSpecError(f"input '{spec_name}' has {len(spec.dims)} dims {list(spec.dims)}, the ONNX input "
                                 f"'{onnx_name}' has {len(g.dims)} {list(g.dims)}",
                                 "give the --input dims of the exported model")
        for axis, (want, have) in enumerate(zip(spec.dims, g.dims)):
            if isinstance(want, int) and isinstance(have, int) and want != have:
                raise InputSpecError(f"input '{spec_name}' is {want} at axis {axis}, the ONNX input "
                                     f"'{onnx_name}' is fixed at {have}", "give the --input dims of the exported model")
            if isinstance(want, str) and isinstance(have, int):
                notes.append(f"the ONNX input '{onnx_name}' is static ({have}) at axis {axis} where '{want}' is "
                             f"declared dynamic: the exporter fixed the size; other sizes will fail to run")
    return mapping


# --------------------------------------------------------------------------- the torch side


def torch_tensors(specs: Sequence[InputSpec], arrays: Mapping[str, Any]) -> tuple:
    """The eager model's positional arguments for the same arrays ONNX Runtime gets
    (copied: a forward() that writes into its input must not change the ORT feed)."""
    import numpy as np
    import torch

    out = []
    for spec in specs:
        t = torch.from_numpy(np.array(arrays[spec.name], copy=True))
        if spec.dtype == "bfloat16":
            t = t.to(torch.bfloat16)  # numpy has no bfloat16: made in float32, cast here
        out.append(t)
    return tuple(out)


def dynamic_shapes(specs: Sequence[InputSpec], module: Any = None) -> tuple:
    """torch.export's dynamic_shapes: Dim.DYNAMIC per declared axis. With it torch.export keeps
    `int(x.shape[0])` symbolic (a named Dim would specialise it silently); the declared names
    are restored in the graph afterwards. torch.export wants the inputs a `forward(*xs)`
    gathers as one tuple (the module tells where that starts)."""
    import inspect

    from torch.export import Dim

    shapes = tuple({i: Dim.DYNAMIC for i, d in enumerate(s.dims) if isinstance(d, str)} or None for s in specs)
    if module is None:
        return shapes
    params = list(inspect.signature(module.forward).parameters.values())
    if not any(p.kind == p.VAR_POSITIONAL for p in params):
        return shapes
    fixed = sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    return shapes[:fixed] + (shapes[fixed:],)


def flatten_outputs(out: Any) -> list[tuple[str, Any]]:
    """(path name, tensor) in the exporter's order: tuples/lists by position, dicts by insertion."""
    import torch

    flat: list[tuple[str, Any]] = []

    def walk(obj: Any, path: str) -> None:
        if isinstance(obj, torch.Tensor):
            flat.append((path, obj))
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, f"{path}.{i}" if path else f"output_{i}")
        elif hasattr(obj, "to_tuple"):  # ModelOutput-like containers
            walk(obj.to_tuple(), path)
        # scalars and None are not graph outputs

    walk(out, "")
    if len(flat) == 1 and flat[0][0] in ("", "output_0"):
        return [("output", flat[0][1])]
    return flat


def to_numpy(t: Any):
    """A torch output as the array ONNX Runtime's is compared with (bfloat16 read as float32)."""
    import torch

    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.cpu().numpy()
