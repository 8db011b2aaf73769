"""What a localisation says in words: the one summary line a report shows first, made only from
what the search compared (onnxtax.parity.points, opsearch, rows)."""

from __future__ import annotations

from typing import Any


def summary_line(loc: Any) -> str:
    where = f"{loc.module} ({loc.class_name})" if loc.module else f"the root forward ({loc.class_name})"
    text = f"first divergence in {where}"
    if loc.origin == "inherited" and loc.first is not None:
        text += f", in its own ops before {loc.first.module} ({loc.first.class_name})"
    op = loc.op
    found_op = op is not None and op.point is not None and op.status in ("made-here", "inputs-unchecked")
    if found_op:
        text += f", op {op.op or op.kind}"
        if op.function and op.function != op.op:
            text += f" ({op.function})"
    if loc.node:
        text += f", node {loc.node} ({loc.op_type})"
    if loc.source:
        text += f", {loc.source.where}" + (f" `{loc.source.code}`" if loc.source.code else "")
        if loc.source.user_frame:
            text += f" (called from {loc.source.user_frame})"
    if loc.first is not None:
        text += f": {loc.first.problem or f'max diff {loc.first.max_abs_diff:.3g}'}"
        if loc.origin == "inherited":
            text += f" at {loc.first.module}"
    if loc.origin:
        text += f"; {loc.origin}" + (f" ({loc.origin_detail})" if loc.origin_detail else "")
    elif loc.origin_detail:
        text += f"; {loc.origin_detail}"
    if op is not None and op.point is not None:
        text += f"; {op.text(named=not found_op)}"
    elif op is not None and op.status == "not-reproduced":
        text += f"; {op.text()}"
    if loc.weights:
        w = loc.weights[0]
        text += (f"; initializer {w['initializer']} differs from parameter {w['parameter']} by up to "
                 f"{w['max_abs_diff']:.3g} (relative {w['max_rel_diff']:.3g})")
    if loc.graph_only_modules and loc.eager_only_modules:
        text += (f"; the ONNX graph runs {', '.join(loc.graph_only_modules[:3])} where eager ran "
                 f"{', '.join(loc.eager_only_modules[:3])} at this input: a branch frozen at export")
    elif loc.graph_only_modules:
        text += f"; the ONNX graph runs {', '.join(loc.graph_only_modules[:3])}, which eager skipped at this input"
    if loc.branch_lines and loc.source and not found_op:
        text += f" (branches in this forward at line {', '.join(map(str, loc.branch_lines[:4]))})"
    if loc.rows and 0 < len(loc.rows["diverging"]) < loc.rows["size"]:
        text += f"; only batch rows {_list(loc.rows['diverging'])} of {loc.rows['size']}"
    elif loc.rows and loc.rows["diverging"]:
        text += f"; every batch row ({loc.rows['size']})"
    if loc.positions:
        text += f"; from position {loc.positions['first']} of {loc.positions['size']} along axis 1"
    for shared in loc.shared:
        text += f"; {shared['text']}"
    return text


def _list(values: list[int]) -> str:
    return ", ".join(map(str, values[:8])) + (", ..." if len(values) > 8 else "")
