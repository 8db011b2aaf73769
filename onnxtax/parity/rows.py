"""Which rows of a batch, and which positions of those rows, fail the element test, and what the
declared inputs of those rows share that the passing rows do not.

The failing rows come from the failing output of the case (parity's element test, per element),
for every sample of that shape, so a batch of one row still has passing rows to set it against. A
shared feature is stated only when it separates exactly: it holds in every failing row and in no
passing row ("attention_mask is all 0"), or, along the positions, at every failing position and at
no passing one ("attention_mask is 0 there and at every earlier position"). Nothing is said when no
feature separates, or when no row passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass
class Failing:
    """The failing units of one sample: rows (axis 0) and, when the output has them, positions (axis 1)."""

    sample: int
    arrays: dict[str, np.ndarray]
    rows: np.ndarray  # bool [B]
    positions: np.ndarray | None  # bool [B, S]


def failing_units(mask: np.ndarray, arrays: dict[str, np.ndarray], sample: int = 0) -> Failing | None:
    """Rows and positions of a failing-element mask, when its axes 0 (and 1) are the inputs' batch (and
    sequence): some input has the same size there."""
    if mask.ndim < 1 or not any(a.ndim and a.shape[0] == mask.shape[0] for a in arrays.values()):
        return None
    b = mask.shape[0]
    rows = mask.reshape(b, -1).any(axis=1)
    positions = None
    if mask.ndim >= 2 and any(a.ndim > 1 and a.shape[:2] == mask.shape[:2] for a in arrays.values()):
        positions = mask.reshape(b, mask.shape[1], -1).any(axis=2)
    return Failing(sample, arrays, rows, positions)


def rows_and_positions(f: Failing) -> tuple[dict, dict | None]:
    """The JSON `rows` (with each failing row's positions) and `positions` of one sample."""
    bad = np.flatnonzero(f.rows)
    rows = {"axis": 0, "size": int(f.rows.size), "diverging": bad.tolist()[:64], "common": None, "sample": f.sample,
            "at": [{"row": int(r), "positions": (np.flatnonzero(f.positions[r]).tolist()[:64]
                                                 if f.positions is not None else None)} for r in bad[:16]]}
    positions = None
    if f.positions is not None:
        cols = np.flatnonzero(f.positions.any(axis=0))
        if 0 < len(cols) < f.positions.shape[1]:
            positions = {"axis": 1, "size": int(f.positions.shape[1]), "diverging": cols.tolist()[:64],
                         "first": int(cols[0])}
    return rows, positions


def shared_by_failing(tables: Sequence[Failing], specs: Sequence[Any], where: str = "") -> list[dict]:
    """What the declared inputs of the failing rows share that passing rows do not: a rows-level rule,
    and a positions-level one when failing rows also have passing positions. Empty when nothing separates."""
    tables = [t for t in tables if t.rows.shape == tables[0].rows.shape] if tables else []
    if not tables:
        return []
    fail = np.concatenate([t.rows for t in tables])
    if not fail.any() or fail.all():
        return []
    if len(tables) > 1 and tables[0].rows.size > 1 and all(t.rows.all() or not t.rows.any() for t in tables):
        # batches of several rows fail or pass whole: rows are not the unit, and a per-row feature would
        # separate whole samples by chance (with one row per sample, a row is the sample)
        bad = [t.sample for t in tables if t.rows.all()]
        good = [t.sample for t in tables if not t.rows.any()]
        return [{"level": "samples", "input": None, "rule": "whole samples",
                 "text": f"the failure goes by whole samples: every row of sample {_nums(bad)} fails, no row of sample "
                         f"{_nums(good)} does (a value computed over the batch, such as a mean, would do this)"}]
    found = []
    rule = _row_rule(tables, fail, specs)
    if rule is not None:
        rule["text"] += _over(tables, where)
        found.append(rule)
    if all(t.positions is not None for t in tables):
        pos = np.concatenate([t.positions for t in tables])
        if (pos[fail] == False).any():  # noqa: E712 - some failing rows have passing positions
            rule = _position_rule(tables, pos, specs)
            if rule is not None:
                rule["text"] += _over(tables, where)
                found.append(rule)
    return found


def _nums(values: list[int]) -> str:
    return ", ".join(map(str, values[:8])) + (", ..." if len(values) > 8 else "")


def _over(tables: Sequence[Failing], where: str) -> str:
    units = sum(t.rows.size for t in tables)
    return f" (checked on {units} rows of {len(tables)} sample(s){' at ' + where if where else ''})"


def _which(tables: Sequence[Failing]) -> str:
    parts = []
    for t in tables:
        bad = np.flatnonzero(t.rows).tolist()
        if bad:
            listed = ", ".join(map(str, bad[:8])) + (", ..." if len(bad) > 8 else "")
            parts.append(f"row{'s' if len(bad) > 1 else ''} {listed}" + (f" of sample {t.sample}" if len(tables) > 1
                                                                          else ""))
    return "; ".join(parts)


def _stack(tables: Sequence[Failing], name: str) -> np.ndarray | None:
    arrs = [t.arrays.get(name) for t in tables]
    n = tables[0].rows.size
    if any(a is None or not a.ndim or a.shape[0] != n or a.shape != arrs[0].shape for a in arrs):
        return None
    return np.concatenate([a.reshape(n, -1) for a in arrs])


def _values(x: np.ndarray, fail: np.ndarray) -> list:
    vals = np.unique(x[fail])[:8].tolist()
    return sorted(vals, key=lambda v: (v != 0, v))


def _masky(name: str) -> bool:
    return "mask" in name.lower()


def _row_rule(tables: Sequence[Failing], fail: np.ndarray, specs: Sequence[Any]) -> dict | None:
    which, n_pass = _which(tables), int((~fail).sum())
    for spec in specs:
        x = _stack(tables, spec.name)
        if x is None:
            continue
        name = spec.name
        if x.dtype.kind in "iub":
            for v in _values(x, fail):
                if np.array_equal((x == v).all(axis=1), fail):
                    return {"level": "rows", "input": name, "rule": f"all {v}",
                            "text": f"{name} is all {v} in every failing row ({which}) and in none of the {n_pass} "
                                    "passing rows"}
            for v in _values(x[:, :1], fail):
                if np.array_equal(x[:, 0] == v, fail):
                    note = " (first token masked)" if _masky(name) and v == 0 else ""
                    return {"level": "rows", "input": name, "rule": f"first {v}",
                            "text": f"{name} is {v} at position 0 in every failing row ({which}) and in none of the "
                                    f"{n_pass} passing rows{note}"}
            if x.size <= 1_000_000:
                shared = set(np.unique(x[fail][0]).tolist())
                for row in x[fail][1:]:
                    shared &= set(np.unique(row).tolist())
                shared = {v for v in shared if not (x[~fail] == v).any()}
                if shared:
                    vals = ", ".join(str(v) for v in sorted(shared)[:5])
                    return {"level": "rows", "input": name, "rule": f"contains {vals}",
                            "text": f"{name} contains {vals} in every failing row ({which}) and in none of the "
                                    f"{n_pass} passing rows"}
        f64 = x.astype(np.float64)
        features = ({"zeros": (f64 == 0).sum(1), "max": f64.max(1), "min": f64.min(1)} if x.dtype.kind in "iub"
                    else {"mean": f64.mean(1), "max": f64.max(1), "min": f64.min(1), "abs max": np.abs(f64).max(1)})
        for fname, f in features.items():
            lo_bad, hi_bad, lo_ok, hi_ok = f[fail].min(), f[fail].max(), f[~fail].min(), f[~fail].max()
            if hi_bad < lo_ok or lo_bad > hi_ok:
                op, bound, other = ("<=", hi_bad, f">= {lo_ok:.4g}") if hi_bad < lo_ok else (">=", lo_bad,
                                                                                           f"<= {hi_ok:.4g}")
                return {"level": "rows", "input": name, "rule": f"{fname} {op} {bound:.4g}",
                        "text": f"{name}: row {fname} {op} {bound:.4g} in every failing row ({which}), {other} in "
                                f"the {n_pass} passing rows"}
    return None


def _position_rule(tables: Sequence[Failing], pos: np.ndarray, specs: Sequence[Any]) -> dict | None:
    s = pos.shape[1]
    for spec in specs:
        x = _stack(tables, spec.name)
        if x is None or x.shape[1] != s or x.dtype.kind not in "iub":
            continue
        name = spec.name
        for v in _values(x, pos.any(axis=1)):
            prefix = np.logical_and.accumulate(x == v, axis=1)
            if np.array_equal(prefix, pos):
                note = " (the leading masked tokens)" if _masky(name) and v == 0 else ""
                return {"level": "positions", "input": name, "rule": f"prefix {v}",
                        "text": f"the failing positions are exactly those where {name} is {v} there and at every "
                                f"earlier position{note}"}
            if np.array_equal(x == v, pos):
                return {"level": "positions", "input": name, "rule": f"equal {v}",
                        "text": f"the failing positions are exactly those where {name} is {v}"}
    return None


__all__ = ["Failing", "failing_units", "rows_and_positions", "shared_by_failing"]
