"""The first divergent module examined: is the difference made inside it or does it arrive with its
inputs, which node and which weight, and when every submodule agrees, the root forward's own ops.

A claim about inputs is made only from comparisons that ran: each ONNX value the module's nodes read
from outside is paired with an input of the module's forward (same shape, or the same elements when
the graph reshaped it) and compared. "Its inputs agree" needs every one of them compared and within
tolerance; a value that could not be paired is named as not compared.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from onnxtax.parity.explain import summary_line
from onnxtax.parity.intermediates import EagerCapture, GraphMap, branch_lines, forward_of, frame_of_stack
from onnxtax.parity.points import InputCheck, Point, compare_point, inputs_text, regrouped, same_kind


def branch_evidence(graph: GraphMap, plan: EagerCapture, module: Any) -> tuple[list[str], list[str]]:
    """Modules the ONNX graph computes that eager did not run at this input, and modules with weights
    that eager ran but the graph lacks: the two sides of a branch frozen at export."""
    ran = set(plan.calls)
    existing = {p for p, _ in module.named_modules()}
    graph_only = [p for p in graph.members if p and p in existing and p not in ran
                  and (p.rpartition(".")[0] in ran or "." not in p)
                  and not any(r.startswith(p + ".") for r in ran)]  # a container (ModuleList) never runs itself
    params = {n.rpartition(".")[0] for n, _ in module.named_parameters()}
    eager_only = [p for p in plan.order if p in params and not graph.owned(p)
                  and (p.rpartition(".")[0] not in plan.calls or graph.owned(p.rpartition(".")[0]))]
    return sorted(graph_only), eager_only


def pick_node(loc: Any, graph: GraphMap, module: Any, first: Point, rtol: float, atol: float) -> None:
    """The node inside the suspect: one whose weight differs from the module's parameter, else its
    only node, else the node producing the module's divergent output."""
    for node, name, param, p in weight_mismatches(graph, module, first.module, rtol, atol):
        loc.weights.append({"initializer": name, "parameter": param, "max_abs_diff": p.max_abs_diff,
                            "max_rel_diff": p.max_rel_diff})
        if loc.node is None:
            loc.node, loc.op_type, loc.node_basis = node.name, node.op_type, "weight"
            loc.source = frame_of_stack(node.stack_trace)
    if loc.node is None:
        owned = graph.owned(first.module)
        idx = owned[0] if len(owned) == 1 else graph.producer.get(first.value or "")
        if idx is not None:
            node = graph.nodes[idx]
            loc.node, loc.op_type = node.name, node.op_type
            loc.node_basis = "only node" if len(owned) == 1 else "module output"
            loc.source = frame_of_stack(node.stack_trace)
    if loc.source is None:
        loc.source = forward_of(module, first.module)


def weight_mismatches(graph: GraphMap, module: Any, path: str, rtol: float, atol: float):
    """(node, initializer, parameter, point) for each weight of the suspect's nodes that matches none of
    the module's parameters: compared by name, else by shape (as is or transposed: the TorchScript
    exporter stores a Linear's weight transposed under a generated name). One weight is in memory
    at a time; a weight parity shared is the same bytes as its parameter, so it is not read at all."""
    try:
        params = {n if not path else f"{path}.{n}": t for n, t in module.get_submodule(path).named_parameters()}
    except AttributeError:
        return
    same = set(graph.shared.names) if graph.shared is not None else set()
    shapes = {n: tuple(t.shape) for n, t in params.items()}

    def array(n: str) -> np.ndarray:
        return params[n].detach().float().cpu().numpy()

    for idx in graph.owned(path):
        node = graph.nodes[idx]
        for name in node.inputs:
            if name not in graph.initializers or (name in same and name in params):
                continue  # shared: byte for byte the parameter of that name, a difference of 0
            w = graph.initializer_array(name)
            if w is None or w.dtype.kind != "f":
                continue
            views = [(n, array(n)) for n in params if n == name]
            if not views:
                for n, shape in shapes.items():
                    if shape == w.shape or (len(shape) == 2 and shape[::-1] == w.shape):
                        v = array(n)
                        views += [(n, x) for x in (v, v.T if v.ndim == 2 else None)
                                  if x is not None and x.shape == w.shape]
            compared = [(n, compare_point(n, "", name, w, v, rtol, atol)[0]) for n, v in views]
            del w, views
            if compared and all(p.diverges for _, p in compared):
                param, point = min(compared, key=lambda c: c[1].tolerance_ratio)
                yield node, name, param, point


def pair_boundary(name: str, onnx_in: np.ndarray, eager_inputs: list[np.ndarray], rtol: float, atol: float,
                  labels: list[str] | None = None) -> tuple[InputCheck, np.ndarray | None]:
    """One ONNX value the module reads from outside, paired with the forward() input that stands for it
    (same shape, else the same elements under a reshape) and compared; with the eager value to feed
    in its place (in the ONNX value's shape), or None when no input could stand for it."""
    best = None
    for i, e in enumerate(eager_inputs):
        if not same_kind(onnx_in, e) or not regrouped(tuple(onnx_in.shape), tuple(e.shape)):
            continue
        how = ("same shape" if onnx_in.shape == e.shape
               else f"same elements in C order (ONNX shape {list(onnx_in.shape)})")
        point, _ = compare_point("", "", name, onnx_in.reshape(e.shape), e, rtol, atol)
        if best is None or point.tolerance_ratio < best[1].tolerance_ratio:
            best = (i, point, how)
    if best is None:
        why = (f"no input of forward() has its shape {list(onnx_in.shape)} or its elements: a value the module "
               "reads from outside its arguments (e.g. through self)")
        return InputCheck(f"ONNX value {name}", None, list(onnx_in.shape), None, how=why), None
    i, point, how = best
    e = eager_inputs[i]
    label = labels[i] if labels and i < len(labels) else f"input {i}"
    check = InputCheck(label, name, list(e.shape), not point.diverges, point.max_abs_diff, point.tolerance_ratio, how)
    return check, e.reshape(onnx_in.shape)


def origin_of(loc: Any, graph: GraphMap, module: Any, first: Point, args: list, eager_out: np.ndarray,
              run_values: Callable[[list[str]], dict], run_alone: Callable[[bytes, dict, str], np.ndarray],
              rtol: float, atol: float) -> None:
    """Local or inherited, from comparisons that ran: the module's ONNX inputs against eager's, then its
    nodes alone fed eager's values."""
    capture = EagerCapture(module, keep_inputs=[first.module])
    capture.run(args)
    eager_inputs = capture.inputs.get(first.module, [])
    names = graph.boundary_inputs(first.module)
    got = run_values(names + [first.value])
    fed: dict[str, np.ndarray] = {}
    sizes = [n for n in names if n in graph.shape_only and n in got]
    for name in names:
        if name not in got:
            continue
        fed[name] = got[name]
        if name in graph.shape_only:  # a size (batch, seq) computed from the inputs' shapes: not a value to compare
            continue
        check, value = pair_boundary(name, got[name], eager_inputs, rtol, atol, capture.input_labels.get(first.module))
        loc.inputs.append(check)
        if value is not None:
            fed[name] = value
    checks = loc.inputs
    said = inputs_text(checks) + (f"; {len(sizes)} size value(s) computed from the input shapes are not compared"
                                  if sizes else "")
    again, _ = compare_point("", "", first.value, got[first.value], eager_out, rtol, atol)
    if not again.diverges:  # the inputs were compared in a session where the fault did not happen
        loc.origin_detail = (f"{said}; but with its inputs as extra outputs its output agrees too "
                             f"({again.tolerance_ratio:.3g}x tolerance): the provider computes it differently when "
                             "they are outputs, so local or inherited cannot be told")
        return
    if all(c.agree for c in checks):  # every one compared and within tolerance (or none to compare)
        loc.origin = "local"
        loc.origin_detail = (f"{said}; its output does not ({first.max_abs_diff:.3g}): the difference is made "
                             f"inside {first.module}")
        return
    differ = [c for c in checks if c.agree is False]
    missing = [c for c in checks if c.agree is None]
    try:
        alone = run_alone(graph.subgraph(first.module, fed, [first.value]), fed, first.value)
    except Exception as exc:  # noqa: BLE001 - the module may not cut out cleanly (e.g. nested functions)
        from onnxtax.core.providers import ort_error_summary

        loc.origin_detail = f"{said}; running its nodes alone failed: {ort_error_summary(exc)[0][:160]}"
        return
    point, _ = compare_point(first.module, first.class_name, first.value, alone, eager_out, rtol, atol)
    fed_text = ("fed eager's inputs" if not missing else
                f"fed eager's values for {len(checks) - len(missing)} of its {len(checks)} inputs (the others as "
                "the graph computes them)") + (" and the graph's sizes" if sizes else "")
    if point.diverges:
        loc.origin = "local"
        loc.origin_detail = (f"{said}; {fed_text}, its ONNX nodes alone still differ ({point.max_abs_diff:.3g}, "
                             f"{point.tolerance_ratio:.3g}x tolerance): the difference is made inside {first.module}")
    elif differ:
        worst = max(differ, key=lambda c: c.max_abs_diff or 0.0)
        loc.origin, loc.inherited_value = "inherited", worst.onnx
        loc.origin_detail = (f"{said}; {fed_text}, its ONNX nodes alone agree ({point.max_abs_diff:.3g}): the "
                             "difference comes from ops before it outside any submodule")
    else:
        loc.origin_detail = (f"{said}; {fed_text}, its ONNX nodes alone agree ({point.max_abs_diff:.3g}): "
                             "undetermined (the values not compared may carry the difference)")


def blame_parent(loc: Any, graph: GraphMap, module: Any, first: Point) -> None:
    """An inherited difference comes from the parent's own ops before the first divergent module:
    the parent (or the root forward) is the suspect, the node computing the differing input its node."""
    parent = first.module.rpartition(".")[0]
    loc.module = parent
    loc.class_name = type(module.get_submodule(parent)).__name__
    loc.node = loc.op_type = loc.source = None
    producer = graph.producer.get(loc.inherited_value or "")
    if producer is not None:
        node = graph.nodes[producer]
        loc.node, loc.op_type, loc.node_basis = node.name, node.op_type, f"input of {first.module}"
        loc.source = frame_of_stack(node.stack_trace)
    else:
        loc.node_basis = None
    loc.source = loc.source or forward_of(module, parent)
    if loc.inherited_value in graph.graph_inputs:
        loc.notes.append(f"{first.module} reads the graph input {loc.inherited_value} directly in ONNX, while eager "
                         f"computed its input first: ops of {loc.class_name}.forward before it are missing from the "
                         "graph (a branch or an in-place update the export did not record)")


def in_root(loc: Any, graph: GraphMap, module: Any, final: Point | None) -> None:
    """Every submodule agrees but the output does not: the root forward's own ops are the cause."""
    if final is None or not final.diverges:
        loc.status, loc.summary = "no-divergence", "no module and no output departs from the source at this sample"
        return
    loc.status, loc.module, loc.class_name = "in-root", "", type(module).__name__
    loc.origin = "local"
    own = graph.own_nodes("")
    producer = graph.producer.get(final.value or "")
    node = graph.nodes[producer] if producer is not None else (own[-1] if own else None)
    if node is not None:
        loc.node, loc.op_type, loc.node_basis = node.name, node.op_type, "module output"
        loc.source = frame_of_stack(node.stack_trace)
    loc.source = loc.source or forward_of(module, "")
    loc.branch_lines = branch_lines(module)
    agree = f"all {loc.compared_modules} submodule outputs agree" if loc.compared_modules else "no submodule compared"
    loc.origin_detail = f"{agree}; the output differs ({final.max_abs_diff:.3g}): the root forward's own ops"
    loc.summary = summary_line(loc)


__all__ = ["branch_evidence", "pick_node", "weight_mismatches", "origin_of", "blame_parent", "in_root",
           "pair_boundary"]
