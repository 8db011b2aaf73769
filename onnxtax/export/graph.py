"""The checks and repairs `onnxtax export` applies to the exported graph before it is written:
declared dynamic axes locked to their names, output dims relabelled from what ORT returned,
the requested opset enforced (converted, or the blocking op named), the graph's I/O records.
"""

from __future__ import annotations

import re

from onnxtax.core.errors import CheckFailed
from onnxtax.core.artifact import dims_of, dtype_of
from onnxtax.core.specs import InputSpec


def rename_symbols(model, mapping: dict[str, str]) -> None:
    """Rename dim_params everywhere (inputs, outputs, value_info), also inside
    expressions such as `s77*5`."""
    if not mapping:
        return
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in sorted(mapping, key=len, reverse=True)) + r")\b")

    def fix(vi) -> None:
        if not vi.type.HasField("tensor_type"):
            return
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param"):
                new = pattern.sub(lambda m: mapping[m.group(1)], d.dim_param)
                if new != d.dim_param:
                    d.dim_param = new

    def walk(graph) -> None:
        for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
            fix(vi)
        for node in graph.node:
            for attr in node.attribute:
                if attr.g is not None and attr.HasField("g"):
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(model.graph)


def lock_dynamic_axes(model, specs: list[InputSpec], sizes: dict[str, int]) -> list[str]:
    """Give every declared axis its declared name in the graph, or fail naming the
    axis the exporter made static. Returns warnings."""
    graph_inputs = {vi.name: vi for vi in model.graph.input}
    initializers = {t.name for t in model.graph.initializer}
    real_inputs = [vi for vi in model.graph.input if vi.name not in initializers]
    mapping: dict[str, str] = {}
    notes: list[str] = []
    if len(real_inputs) != len(specs):
        names = ", ".join(vi.name for vi in real_inputs)
        unused = [s.name for s in specs if s.name not in graph_inputs]
        raise CheckFailed(
            f"the exported graph has {len(real_inputs)} inputs ({names}) but {len(specs)} --input were declared"
            + (f"; unused by the model: {', '.join(unused)}" if unused else ""),
            "an input the forward() ignores is dropped by the exporter: remove it from forward() or use it")
    for spec, vi in zip(specs, real_inputs):
        if vi.name != spec.name:
            notes.append(f"graph input '{vi.name}' holds --input '{spec.name}'")
        dims = dims_of(vi)
        if len(dims) != len(spec.dims):
            raise CheckFailed(f"input '{spec.name}' has rank {len(dims)} in the graph but {len(spec.dims)} declared",
                              "fix the --input dims")
        for axis, (declared, got) in enumerate(zip(spec.dims, dims)):
            if isinstance(declared, str):
                if isinstance(got, int):
                    raise CheckFailed(
                        f"the exporter made dynamic axis '{declared}' of input '{spec.name}' (axis {axis}) static: "
                        f"size {got} is baked into the graph",
                        "the model code treats this size as a constant (int(x.shape[i]), .item(), a Python "
                        "loop or reshape on it): compute it with tensor ops, or declare the axis static")
                if isinstance(got, str) and got != declared:
                    prev = mapping.get(got)
                    if prev is not None and prev != declared:
                        raise CheckFailed(
                            f"the exporter treats axes '{prev}' and '{declared}' as the same size (symbol {got})",
                            "give both axes one name in --input if they are equal, or different example sizes "
                            "with --dim")
                    mapping[got] = declared
            else:
                if isinstance(got, int) and got != declared:
                    raise CheckFailed(f"input '{spec.name}' axis {axis} is {got} in the graph, {declared} declared",
                                      "fix the --input dims")
    rename_symbols(model, mapping)
    # static declared axes the exporter left symbolic: make the contract exact
    for spec, vi in zip(specs, real_inputs):
        for declared, d in zip(spec.dims, vi.type.tensor_type.shape.dim):
            if isinstance(declared, int) and d.HasField("dim_param"):
                d.dim_value = declared
    return notes


def repair_output_dims(model, observed: dict[str, list[tuple[dict[str, int], tuple[int, ...]]]]) -> list[str]:
    """The exporter may label an output dim with an export-time size although it follows
    an axis (a GRU's sequence dim). Relabel it from what ORT really returned."""
    notes = []
    for vo in model.graph.output:
        runs = observed.get(vo.name)
        if not runs or not vo.type.HasField("tensor_type"):
            continue
        for axis, d in enumerate(vo.type.tensor_type.shape.dim):
            actual = [shape[axis] for _, shape in runs if axis < len(shape)]
            if len(actual) != len(runs):
                continue
            declared = d.dim_value if d.HasField("dim_value") else None
            if declared is not None and any(a != declared for a in actual):
                follows = [sym for sym in runs[0][0] if all(sizes[sym] == a for (sizes, _), a in zip(runs, actual))]
                if follows:
                    d.dim_param = follows[0]
                else:
                    d.Clear()
                notes.append(f"output '{vo.name}' axis {axis} was labelled {declared} but varies with the input "
                             f"({', '.join(map(str, actual))}): relabelled {follows[0] if follows else 'unknown'}")
    return notes


def io_records(model) -> tuple[list[dict], list[dict]]:
    initializers = {t.name for t in model.graph.initializer}
    ins = [{"name": vi.name, "dims": dims_of(vi), "dtype": dtype_of(vi)}
           for vi in model.graph.input if vi.name not in initializers]
    outs = [{"name": vo.name, "dims": dims_of(vo), "dtype": dtype_of(vo)} for vo in model.graph.output]
    return ins, outs


def default_opset(model) -> int | None:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return None


def lock_opset(model, requested: int):
    """Convert to the requested opset if the exporter wrote another; fail naming the op that blocks it."""
    import onnx.version_converter

    produced = default_opset(model)
    if produced == requested:
        return model, None
    try:
        converted = onnx.version_converter.convert_version(model, requested)
    except Exception as exc:  # noqa: BLE001 - the C++ converter raises RuntimeError/ValueError
        text = str(exc).strip()
        m = (re.search(r"No Previous Version of (\w+)", text) or re.search(r"for (\w+)\s*$", text)
             or re.search(r"No Adapter (?:To|From) Version \$?\d+ for (\w+)", text))
        blocking = [m.group(1)] if m else ops_newer_than(model, requested)
        op = f"; op {', '.join(blocking)} blocks the conversion" if blocking else ""
        raise CheckFailed(
            f"requested opset {requested} but the exporter produced opset {produced}, and converting failed{op}",
            f"use --opset {produced} (or higher), or replace the blocking op in the model") from exc
    if default_opset(converted) != requested:
        raise CheckFailed(f"requested opset {requested}; conversion produced {default_opset(converted)}",
                          f"use --opset {produced}")
    return converted, f"the exporter wrote opset {produced}; converted to the requested {requested} and re-checked"


def ops_newer_than(model, opset: int) -> list[str]:
    """ai.onnx ops of the model that do not exist at `opset` at all (e.g. LayerNormalization
    before 17): what blocks a down-conversion when the converter's message names nothing."""
    import onnx.defs

    missing = []
    for op in dict.fromkeys(n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")):
        try:
            onnx.defs.get_schema(op, opset, "")
        except onnx.defs.SchemaError:
            missing.append(op)
    return missing


def unify_custom_functions(model) -> None:
    """Keep the model's function opsets consistent with the converted default domain."""
    opset = default_opset(model)
    for fn in model.functions:
        for imp in fn.opset_import:
            if imp.domain in ("", "ai.onnx") and opset is not None and imp.version > opset:
                imp.version = opset
