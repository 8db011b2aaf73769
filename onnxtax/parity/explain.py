"""What a localisation says in words: which batch rows and positions diverge and what the inputs
of those rows share, and the one summary line a report shows first."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


# --------------------------------------------------------------------------- which elements
def where_it_diverges(mask: np.ndarray, specs: Sequence[Any], arrays: dict[str, np.ndarray]
                       ) -> tuple[dict | None, dict | None]:
    """Batch rows and sequence positions of the divergent elements, and what those rows of the inputs share."""
    rows = positions = None
    if mask.ndim >= 1 and mask.shape[0] > 1 and any(a.ndim and a.shape[0] == mask.shape[0] for a in arrays.values()):
        bad = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
        rows = {"axis": 0, "size": int(mask.shape[0]), "diverging": bad.tolist()[:64],
                "common": rows_in_common(bad, mask.shape[0], specs, arrays) if 0 < len(bad) < mask.shape[0] else None}
    if mask.ndim >= 2 and mask.shape[1] > 1 and any(a.ndim > 1 and a.shape[1] == mask.shape[1]
                                                    for a in arrays.values()):
        moved = np.moveaxis(mask, 1, 0).reshape(mask.shape[1], -1)
        bad = np.flatnonzero(moved.any(axis=1))
        if 0 < len(bad) < mask.shape[1]:
            positions = {"axis": 1, "size": int(mask.shape[1]), "diverging": bad.tolist()[:64], "first": int(bad[0])}
    return rows, positions


def rows_in_common(bad: np.ndarray, n: int, specs: Sequence[Any], arrays: dict[str, np.ndarray]) -> str | None:
    """A per-row feature of one input that separates the divergent rows from the others, if any."""
    is_bad = np.zeros(n, bool)
    is_bad[bad] = True
    for spec in specs:
        arr = arrays.get(spec.name)
        if arr is None or not arr.ndim or arr.shape[0] != n:
            continue
        flat = arr.reshape(n, -1).astype(np.float64)
        if arr.dtype.kind in "iu" and arr.size <= 1_000_000:
            # a value every divergent row holds and no other row does: a token id, a padding pattern
            shared = set(np.unique(flat[bad[0]]))
            for r in bad[1:]:
                shared &= set(np.unique(flat[r]))
            shared = {v for v in shared if not any(v in flat[r] for r in np.flatnonzero(~is_bad))}
            if shared:
                values = ", ".join(f"{int(v)}" for v in sorted(shared)[:5])
                return f"these rows of {spec.name} contain {values}, the others do not"
        if arr.dtype.kind in "iub":
            features = {"zeros": (flat == 0).sum(1), "max": flat.max(1), "min": flat.min(1)}
        else:
            features = {"mean": flat.mean(1), "max": flat.max(1), "min": flat.min(1), "abs max": np.abs(flat).max(1)}
        for fname, f in features.items():
            lo_bad, hi_bad = f[is_bad].min(), f[is_bad].max()
            lo_ok, hi_ok = f[~is_bad].min(), f[~is_bad].max()
            if hi_bad < lo_ok:
                return f"{spec.name}: row {fname} <= {hi_bad:.4g} in these rows, >= {lo_ok:.4g} in the others"
            if lo_bad > hi_ok:
                return f"{spec.name}: row {fname} >= {lo_bad:.4g} in these rows, <= {hi_ok:.4g} in the others"
    return None


def summary_line(loc: Any) -> str:
    where = f"{loc.module} ({loc.class_name})" if loc.module else f"the root forward ({loc.class_name})"
    text = f"first divergence in {where}"
    if loc.origin == "inherited" and loc.first is not None:
        text += f", in its own ops before {loc.first.module} ({loc.first.class_name})"
    if loc.node:
        text += f", node {loc.node} ({loc.op_type})"
    if loc.source:
        text += f", {loc.source.where}" + (f" `{loc.source.code}`" if loc.source.code else "")
    if loc.first is not None:
        text += f": {loc.first.problem or f'max diff {loc.first.max_abs_diff:.3g}'}"
        if loc.origin == "inherited":
            text += f" at {loc.first.module}"
    if loc.origin:
        text += f"; {loc.origin}" + (f" ({loc.origin_detail})" if loc.origin_detail else "")
    if loc.weights:
        w = loc.weights[0]
        text += (f"; initializer {w['initializer']} differs from parameter {w['parameter']} by up to "
                 f"{w['max_abs_diff']:.3g} (relative {w['max_rel_diff']:.3g})")
    if loc.graph_only_modules and loc.eager_only_modules:
        text += (f"; the ONNX graph runs {', '.join(loc.graph_only_modules[:3])} where eager ran "
                 f"{', '.join(loc.eager_only_modules[:3])} at this input: a branch frozen at export")
    elif loc.graph_only_modules:
        text += f"; the ONNX graph runs {', '.join(loc.graph_only_modules[:3])}, which eager skipped at this input"
    if loc.branch_lines and loc.source:
        text += f" (branches in this forward at line {', '.join(map(str, loc.branch_lines[:4]))})"
    if loc.rows and loc.rows.get("common"):
        text += f"; only batch rows {_list(loc.rows['diverging'])} of {loc.rows['size']}: {loc.rows['common']}"
    elif loc.rows and 0 < len(loc.rows["diverging"]) < loc.rows["size"]:
        text += f"; only batch rows {_list(loc.rows['diverging'])} of {loc.rows['size']}"
    if loc.positions:
        text += f"; from position {loc.positions['first']} of {loc.positions['size']} along axis 1"
    return text


def _list(values: list[int]) -> str:
    return ", ".join(map(str, values[:8])) + (", ..." if len(values) > 8 else "")
