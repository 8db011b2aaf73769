"""Inside the first divergent module: the first op whose output departs from eager while its inputs
agree, found by comparing eager's op outputs with the ONNX values op by op (onnxtax.parity.ops
pairs them).

Every sentence of the finding is made from a comparison that ran: the op "departs" from its
output's `Point`; "its inputs agree" only when each input-dependent input of the eager call was
paired with a value the ONNX op reads and compared; an input that could not be paired is named as
not compared. When the first departing op already reads a differing input, the finding says so and
blames nothing. For scaled-dot-product attention, the masked-row cause is stated only when the
rows that depart are exactly the rows whose mask is all False, eager's output is 0 there, and the
graph's is the mean of the value rows.

JSON of `OpFinding.to_dict()` (keys stable; `Localization.op`):
{"status": "made-here" | "inputs-differ" | "inputs-unchecked" | "no-divergence" | "not-compared" | "not-reproduced",
 "module": "model.h.0.attn", "op": "aten.scaled_dot_product_attention.default" | "Mul",
 "kind": "scaled_dot_product_attention", "function": "torch.nn.functional.scaled_dot_product_attention",
 "fx_node": "scaled_dot_product_attention" | null, "node": "node_scaled_dot_product_attention" | null,
 "op_type": "MatMul" | null, "lowered_to": "Mul, MatMul, Where, Add, Softmax, IsNaN, Where, MatMul",
 "output": "scaled_dot_product_attention", "source": null | {...}, "frames": ["file:line", ...],
 "point": null | point, "inputs": [{"eager", "onnx", "shape", "agree", "max_abs_diff", "tolerance_ratio", "how"}],
 "weights": 0, "cause": null | "<one checked sentence>",
 "own_ops": 14, "graph_ops": 12, "paired": 9, "compared": 6, "notes": [...]}
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from onnxtax.parity.intermediates import GraphMap, SourceLine
from onnxtax.parity.ops import GraphOp, OpCapture, OpRecord, describe_group, graph_ops, pair_ops, source_of
from onnxtax.parity.points import InputCheck, Point, compare_point, inputs_text, same_kind


@dataclass
class OpFinding:
    """The op-level answer inside one module."""

    module: str
    status: str = "not-compared"
    op: str | None = None
    kind: str | None = None
    function: str | None = None
    fx_node: str | None = None
    node: str | None = None
    op_type: str | None = None
    lowered_to: str | None = None
    output: str | None = None
    source: SourceLine | None = None
    frames: list[str] = field(default_factory=list)
    point: Point | None = None
    inputs: list[InputCheck] = field(default_factory=list)
    weights: int = 0
    cause: str | None = None
    own_ops: int = 0
    graph_ops: int = 0
    paired: int = 0
    compared: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def made_here(self) -> bool:
        return self.status == "made-here"

    def to_dict(self) -> dict:
        return {"status": self.status, "module": self.module, "op": self.op, "kind": self.kind,
                "function": self.function, "fx_node": self.fx_node, "node": self.node, "op_type": self.op_type,
                "lowered_to": self.lowered_to, "output": self.output,
                "source": self.source.to_dict() if self.source else None, "frames": list(self.frames),
                "point": self.point.to_dict() if self.point else None,
                "inputs": [c.to_dict() for c in self.inputs], "weights": self.weights, "cause": self.cause,
                "own_ops": self.own_ops, "graph_ops": self.graph_ops, "paired": self.paired,
                "compared": self.compared, "notes": list(self.notes)}

    def text(self, named: bool = True) -> str:
        """One clause: which op (unless `named` is False: the summary has named it), what was checked,
        what it shows."""
        if self.point is None:
            return f"op level: {self.notes[0] if self.notes else self.status}"
        name = self.op or self.kind or "op"
        where = f" at {self.source.where} `{self.source.code}`" if self.source and self.source.code else ""
        subject = f"op {name}{where}" if named else "the op"
        checked = inputs_text(self.inputs)
        if self.weights:
            checked += f" ({self.weights} weight(s) not compared here)"
        p = self.point
        out = p.problem or f"max diff {p.max_abs_diff:.3g}, {p.tolerance_ratio:.3g}x tolerance"
        if self.status == "made-here":
            text = f"{subject} departs while its inputs agree: {checked}; its output does not ({out})"
        elif self.status == "inputs-differ":
            text = (f"the first compared op that departs ({subject}) already reads differing inputs: {checked}; "
                    f"the difference is made before it by ops without an ONNX counterpart "
                    f"({self.compared} of {self.own_ops} own ops compared)")
        else:
            text = f"{subject} departs ({out}); {checked}"
        return text + (f"; {self.cause}" if self.cause else "")


def locate_op(graph: GraphMap, module: Any, path: str, args: list[Any], run_values: Callable[[list[str]], dict],
              rtol: float, atol: float, *, budget_mb: float, deadline: float,
              witness: tuple[str, np.ndarray] | None = None) -> OpFinding:
    """The first op of `path`'s own forward whose output departs from eager, with its inputs checked.
    `run_values(names)` runs the graph on the case's input with those values as outputs. `witness`: an
    ONNX value known to depart (the module's output) and eager's value of it: it rides along in every
    session, and where it agrees the divergence did not reproduce there, so nothing is concluded."""
    target = module.get_submodule(path) if path else module
    finding = OpFinding(path)
    records = OpCapture(module, path).run(args).records
    gops = graph_ops(graph, path)
    pairs = pair_ops(records, gops)
    finding.own_ops, finding.graph_ops, finding.paired = len(records), len(gops), len(pairs)
    if not pairs:
        finding.notes.append(f"none of the {len(records)} torch calls of {path or 'the root forward'} pairs with "
                             f"one of its {len(gops)} ONNX op group(s): not compared op by op")
        return finding
    used: set[str] = set()
    for chunk in _chunks(pairs, budget_mb):
        if time.perf_counter() > deadline:
            finding.notes.append("op-level search stopped: the time budget ran out")
            return finding
        capture = OpCapture(module, path, keep={r.index for r, _ in chunk}).run(args)
        if len(capture.records) != len(records):
            finding.notes.append("the module made other torch calls on a second run: ops not compared")
            return finding
        names = [v for _, gs in chunk for g in gs for v in g.outputs + g.inputs]
        got = run_values(list(dict.fromkeys(names + ([witness[0]] if witness else []))))
        if witness is not None and witness[0] in got:
            check, _ = compare_point("", "", witness[0], got[witness[0]], witness[1], rtol, atol)
            if not check.diverges:
                finding.status = "not-reproduced"
                where = path or "the root forward"
                finding.notes.append(f"with the op values as extra outputs, {witness[0]} agrees with eager too "
                                     f"({check.tolerance_ratio:.3g}x tolerance): the provider computes {where} "
                                     "differently when they are outputs, so its ops cannot be compared one by one here")
                return finding
        for record, groups in chunk:
            paired = _pair(record, groups, capture.outputs.get(record.index, []), got, used, rtol, atol)
            if paired is None:
                continue
            group, point, masks = paired
            finding.compared += 1
            if not point.diverges:
                continue
            _describe(finding, graph, record, group, point, type(target).__name__)
            eager_inputs = capture.inputs.get(record.index, [])
            finding.inputs, finding.weights = check_inputs(eager_inputs, {v: got[v] for v in group.inputs
                                                                          if v in got}, rtol, atol)
            agree = [c.agree for c in finding.inputs]
            finding.status = ("inputs-differ" if False in agree else "inputs-unchecked" if None in agree
                              else "made-here")
            if finding.status != "inputs-differ":
                finding.cause = masked_rows_cause(graph, group, record.kind, eager_inputs,
                                                  capture.outputs[record.index][0], got.get(group.outputs[0]),
                                                  masks[0], rtol, atol)
            return finding
        del capture, got
    finding.status = "no-divergence"
    finding.notes.append(f"each of the {finding.compared} ops compared in {path or 'the root forward'} agrees "
                         "with eager: the difference is made by ops without an ONNX counterpart")
    return finding


def _chunks(pairs: list[tuple[OpRecord, list[GraphOp]]], budget_mb: float) -> list[list]:
    """Consecutive ops whose eager and ONNX copies (outputs and inputs) fit the budget."""
    budget = budget_mb * 2**20
    chunks: list[list] = []
    size = 0.0
    for pair in pairs:
        need = 2.0 * (pair[0].out_bytes + pair[0].in_bytes)
        if not chunks or size + need > budget:
            chunks.append([])
            size = 0.0
        chunks[-1].append(pair)
        size += need
    return chunks


def _pair(record: OpRecord, groups: list[GraphOp], eager: list[np.ndarray], got: dict, used: set[str],
          rtol: float, atol: float) -> tuple[GraphOp, Point, list] | None:
    """The group standing for this op and the comparison of their outputs; None when no group (or more
    than one, when the order could not decide) has outputs of the op's shapes."""
    fits = []
    for g in groups:
        if g.name in used:
            continue
        values = [got.get(v) for v in g.outputs]
        outs = [v for v in values if v is not None]
        pairs = [(e, next((o for o in outs if o.shape == e.shape and same_kind(o, e)), None)) for e in eager]
        if pairs and all(o is not None for _, o in pairs):
            fits.append((g, pairs))
    if len(fits) != 1:  # none, or several the order could not tell apart: not compared
        return None
    g, pairs = fits[0]
    used.add(g.name)
    worst, masks = None, []
    for e, o in pairs:
        point, mask = compare_point(record.kind, record.kind, g.outputs[0], o, e, rtol, atol)
        masks.append(mask)
        if worst is None or point.tolerance_ratio > worst.tolerance_ratio:
            worst = point
    return g, worst, masks


def _describe(finding: OpFinding, graph: GraphMap, record: OpRecord, group: GraphOp, point: Point,
              class_name: str) -> None:
    producer = graph.producer.get(group.outputs[0])
    node = graph.nodes[producer] if producer is not None else graph.nodes[group.nodes[-1]]
    finding.op = group.target if graph.exporter == "dynamo" else node.op_type
    finding.kind, finding.function = record.kind, record.function
    finding.fx_node = group.name if graph.exporter == "dynamo" else None
    finding.node, finding.op_type, finding.output = node.name, node.op_type, group.outputs[0]
    finding.lowered_to = describe_group(graph, group)
    finding.source, finding.frames = source_of(record, class_name)
    finding.point = point


def check_inputs(eager: list[tuple[str, np.ndarray | None, tuple, bool]], onnx: dict[str, np.ndarray], rtol: float,
                 atol: float) -> tuple[list[InputCheck], int]:
    """Each input-dependent eager input paired with one ONNX value the op reads (same shape and kind; the
    pairing that agrees best when several fit) and compared; weights are counted, not compared."""
    dyn = [(label, arr) for label, arr, _, weight in eager if not weight and arr is not None]
    weights = sum(1 for *_, weight in eager if weight)
    names = list(onnx)
    table = [[compare_point(label, "", n, onnx[n], arr, rtol, atol)[0]
              if onnx[n].shape == arr.shape and same_kind(onnx[n], arr) else None for n in names] for label, arr in dyn]
    choice = _assign(table)
    checks = []
    for i, ((label, arr), j) in enumerate(zip(dyn, choice)):
        if j is None:
            why = f"no input-dependent value of shape {list(arr.shape)} read by the ONNX op"
            checks.append(InputCheck(label, None, list(arr.shape), None, how=why))
            continue
        p = table[i][j]
        checks.append(InputCheck(label, names[j], list(arr.shape), not p.diverges, p.max_abs_diff, p.tolerance_ratio))
    return checks, weights


def _assign(table: list[list[Point | None]]) -> list[int | None]:
    """One ONNX value per eager input, each used once: the most inputs paired, then the fewest that
    disagree, then the smallest ratios (exhaustive while the pairings to try stay few, greedy above)."""
    n, m = len(table), len(table[0]) if table else 0
    tries = math.prod(1 + sum(p is not None for p in row) for row in table)

    def cost(i: int, j: int | None) -> tuple[int, int, float]:
        p = None if j is None else table[i][j]
        if p is None:
            return (1, 0, 0.0)
        return (0, int(p.diverges), math.log1p(min(p.tolerance_ratio, 1e300)))

    if tries > 20_000:
        used: set[int] = set()
        out = []
        for i in range(n):
            options = [j for j in range(m) if table[i][j] is not None and j not in used]
            j = min(options, key=lambda j: cost(i, j), default=None)
            out.append(j)
            if j is not None:
                used.add(j)
        return out
    best: tuple[tuple, list] = ((math.inf,), [])

    def walk(i: int, used: frozenset, acc: tuple, picks: list) -> None:
        nonlocal best
        if i == n:
            if acc < best[0]:
                best = (acc, list(picks))
            return
        for j in [j for j in range(m) if table[i][j] is not None and j not in used] + [None]:
            c = cost(i, j)
            walk(i + 1, used | {j} if j is not None else used, tuple(a + b for a, b in zip(acc, c)), picks + [j])

    walk(0, frozenset(), (0, 0, 0.0), [])
    return best[1]


def masked_rows_cause(graph: GraphMap, group: GraphOp, kind: str, eager_inputs: list, eager_out: np.ndarray,
                      onnx_out: np.ndarray | None, mask: np.ndarray | None, rtol: float, atol: float) -> str | None:
    """Scaled-dot-product attention over fully masked rows, when the evidence shows exactly that: the
    query rows that depart are the rows whose attn_mask is all False; eager returns 0 there; the graph
    returns the mean of the value rows (uniform weights). Each clause is checked before it is written."""
    if kind != "scaled_dot_product_attention" or onnx_out is None or mask is None or eager_out.ndim < 2:
        return None
    named = {label: arr for label, arr, _, _ in eager_inputs}
    q, v = named.get("args[0]"), named.get("args[2]")
    attn = named.get("attn_mask", named.get("args[3]"))
    if q is None or v is None or attn is None or q.ndim != eager_out.ndim:
        return None
    try:
        keys = v.shape[-2]
        visible = attn if attn.dtype == np.bool_ else (attn > np.finfo(np.float32).min / 2)
        shape = tuple(eager_out.shape[:-1]) + (keys,)
        full = ~np.broadcast_to(visible, shape).any(-1)  # [..., query]: every key masked
        departs = mask.reshape(eager_out.shape).any(-1)
        mean_v = np.broadcast_to(v.astype(np.float64).mean(-2, keepdims=True), eager_out.shape)
    except ValueError:  # shapes that do not broadcast (grouped heads, packed sequences): no claim
        return None
    if not departs.any() or not np.array_equal(departs, full):
        return None
    if np.any(eager_out[full] != 0):
        return None
    n = int(full.sum())
    text = (f"it departs exactly at the {n} query row(s) whose attention mask is all False (every key masked), "
            "where eager's scaled_dot_product_attention returns 0")
    uniform, _ = compare_point("", "", None, onnx_out[full].astype(np.float64), mean_v[full], rtol, atol)
    if not uniform.diverges:
        text += " and the ONNX graph the mean of the value rows (uniform attention weights)"
        bias = _mask_bias(graph, group)
        if bias is not None:
            text += (f": its lowering adds the mask as a finite bias ({bias:.7g}, not -inf), so softmax over a fully "
                     "masked row is uniform instead of empty")
    return text


def _mask_bias(graph: GraphMap, group: GraphOp) -> float | None:
    """The finite fill value a Where node of the group uses for masked scores (e.g. -3.402823e+38)."""
    constants = _constant_scalars(graph)
    for i in group.nodes:
        node = graph.nodes[i]
        if node.op_type != "Where":
            continue
        for name in node.inputs[1:]:
            value = constants.get(name)
            if value is not None and math.isfinite(value) and value < -1e30:
                return value
    return None


def _constant_scalars(graph: GraphMap) -> dict[str, float]:
    """Scalar constants of the graph: Constant nodes and one-element initializers."""
    from onnx import numpy_helper

    out: dict[str, float] = {}
    for node in graph.proto.graph.node:
        if node.op_type == "Constant" and node.attribute and not list(node.attribute[0].t.dims):
            try:
                out[node.output[0]] = float(numpy_helper.to_array(node.attribute[0].t).reshape(-1)[0])
            except (ValueError, IndexError, TypeError):
                continue
    for t in graph.proto.graph.initializer:
        if int(np.prod(t.dims, dtype=np.int64)) == 1:
            arr = graph.initializer_array(t.name)
            if arr is not None and arr.dtype.kind == "f":
                out[t.name] = float(arr.reshape(-1)[0])
    return out


__all__ = ["OpFinding", "locate_op", "check_inputs", "masked_rows_cause"]
