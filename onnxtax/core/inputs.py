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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from onnxtax.core.artifact import Artifact, open_artifact
from onnxtax.core.errors import InputSpecError
from onnxtax.core.specs import InputSpec, SampleRecipe, ValueRange, parse_input_specs, symbols_of

InputSource = Literal["arguments", "manifest", "onnx-graph"]
INPUT_SOURCES: tuple[InputSource, ...] = ("arguments", "manifest", "onnx-graph")



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


def resolve_inputs(artifact: str | Path | Artifact, given: Sequence[str | InputSpec] | ResolvedInputs | None = None,
                   *, ranges: Mapping[str, ValueRange | tuple[float, float]] | None = None) -> ResolvedInputs:
    """Specs from `given` (strings or InputSpecs), else the manifest beside the model, else
    the graph; matched to the graph's inputs by one rule (`match_graph`). `artifact`: an
    opened Artifact, or the path of one (opened here)."""
    if isinstance(given, ResolvedInputs):
        return given
    artifact = open_artifact(artifact)
    in_graph = artifact.inputs
    source: InputSource
    declared = artifact.declared_inputs
    if given:
        specs = parse_input_specs([str(s) for s in given])  # an InputSpec prints as a parseable spec
        source = "arguments"
    elif declared:
        specs = declared
        source = "manifest"
    else:
        specs = in_graph
        source = "onnx-graph"
    notes: list[str] = []
    onnx_names = match_graph(specs, in_graph, notes)
    known = set(symbols_of(specs))
    export_sizes = {sym: size for sym, size in artifact.export_sizes.items() if sym in known}
    resolved = ResolvedInputs(specs, source, onnx_names, export_sizes, {}, notes, artifact.manifest,
                              list(artifact.output_names))
    resolved.ranges = {**derived_ranges(artifact.manifest, specs), **check_ranges(ranges, specs)}
    return resolved


def derived_ranges(manifest: dict | None, specs: list[InputSpec]) -> dict[str, ValueRange]:
    """The value ranges an hf:/st: export derived from its folder (manifest `derived.ranges`: token ids
    below the vocabulary, masks as the tokenizer pads), for the inputs present; a --range wins."""
    recorded = ((manifest or {}).get("derived") or {}).get("ranges") or {}
    names = {s.name for s in specs}
    out: dict[str, ValueRange] = {}
    for name, value in recorded.items():
        if name in names and isinstance(value, dict) and {"low", "high"} <= set(value):
            out[name] = ValueRange.from_dict(value)
    return out


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
