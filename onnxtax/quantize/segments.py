"""Data segments, quality metrics and budgets: what `onnxtax quantize` approves a model on.

A quantized model is approved per segment, never on the aggregate alone: a 5% tail of
unusual inputs can lose a third of its decisions while the aggregate moves by a point.
Each segment is a set of rows (one `.npz` file, or the rows of one value of a segment key
inside a file), compared with the FP32 eager model's outputs on the same rows.

Metrics (names as `--budget` takes them; "higher" ones are fractions 0..1 or cosines):

  agreement@T    higher  share of output elements on the same side of threshold T as the
                         FP32 model (a binary decision, e.g. p > 0.5)
  top1, topK     higher  rows whose FP32 top-1 class is the top-1 (top-K) class of the model
                         under test (argmax over the last axis)
  cosine         higher  the lowest cosine similarity of one row's output with FP32's (embeddings)
  max_abs        lower   largest absolute difference of any output element
  mean_abs       lower   mean absolute difference
  accuracy_drop  lower   FP32 accuracy minus the model's accuracy on the labels, in points
                         (binary outputs: p > T, T from an agreement@T budget or 0.5;
                         otherwise argmax)

Budgets: `METRIC=VALUE` applies to every segment; `SEGMENT:METRIC=VALUE` to one (and
replaces the general one there). The value checked is the worst over the ways the rows
were run (one row per request, and in mixed batches), so a model whose answer depends on
the other rows of its batch is judged by its worst batch.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from onnxtax.core.errors import InputSpecError
from onnxtax.core.specs import input_array, read_npz

HIGHER_IS_BETTER = ("agreement", "top", "cosine")
METRIC_HELP = "agreement@0.5, top1, top5, cosine, max_abs, mean_abs, accuracy_drop"
_METRIC = re.compile(r"^(agreement@(?P<thr>-?[0-9.eE+-]+)|top(?P<k>[1-9][0-9]*)|cosine|max_abs|mean_abs"
                     r"|accuracy_drop)$")


# --------------------------------------------------------------------------- budgets
@dataclass(frozen=True)
class Budget:
    """One limit: `metric` must be >= (higher-is-better) or <= `limit` on `segment` (None: all)."""

    metric: str
    limit: float
    segment: str | None = None

    @property
    def higher_is_better(self) -> bool:
        return self.metric.startswith(HIGHER_IS_BETTER)

    def holds(self, value: float | None) -> bool:
        if value is None or not math.isfinite(value):
            return False
        return value >= self.limit if self.higher_is_better else value <= self.limit

    @property
    def text(self) -> str:
        return f"{'>=' if self.higher_is_better else '<='} {self.limit:g}"

    def to_dict(self) -> dict:
        return {"segment": self.segment, "metric": self.metric, "limit": self.limit,
                "direction": "min" if self.higher_is_better else "max"}


def parse_metric(text: str) -> str:
    m = _METRIC.match(text.strip())
    if not m:
        raise InputSpecError(f"unknown metric '{text}'", f"metrics: {METRIC_HELP}")
    if m.group("thr") is not None:
        try:
            thr = float(m.group("thr"))
        except ValueError:
            raise InputSpecError(f"metric '{text}': '{m.group('thr')}' is not a threshold", "e.g. agreement@0.5")
        return f"agreement@{thr:g}"
    return text.strip()


def parse_budgets(texts: Sequence[str]) -> list[Budget]:
    """`agreement@0.5=0.97`, `tail:agreement@0.5=0.95`, `accuracy_drop=1.0`."""
    out: list[Budget] = []
    for text in texts:
        left, sep, value = text.rpartition("=")
        segment, colon, metric_text = left.partition(":")
        if not colon:
            segment, metric_text = "", left
        try:
            limit = float(value)
        except ValueError:
            limit = math.nan
        if not sep or not metric_text.strip() or not math.isfinite(limit) or (colon and not segment.strip()):
            raise InputSpecError(f"--budget '{text}' needs [SEGMENT:]METRIC=VALUE with a finite number",
                                 "e.g. --budget agreement@0.5=0.97 or --budget tail:cosine=0.99")
        metric = parse_metric(metric_text)
        if metric.startswith(("agreement", "top")) and not 0 <= limit <= 1:
            raise InputSpecError(f"--budget '{text}': {metric} is a fraction between 0 and 1",
                                 f"e.g. {metric}=0.97 for 97%")
        if metric in ("max_abs", "mean_abs") and limit < 0:
            raise InputSpecError(f"--budget '{text}': {metric} cannot be negative", f"e.g. {metric}=0.01")
        budget = Budget(metric, limit, segment.strip() or None)
        out = [b for b in out if (b.segment, b.metric) != (budget.segment, budget.metric)] + [budget]
    return out


def budgets_for(budgets: list[Budget], segment: str) -> list[Budget]:
    """The budgets one segment is held to: its own, and the general ones it does not override."""
    own = {b.metric: b for b in budgets if b.segment is not None and fnmatch.fnmatchcase(segment, b.segment)}
    general = [b for b in budgets if b.segment is None and b.metric not in own]
    return general + list(own.values())


# --------------------------------------------------------------------------- segments
@dataclass
class Segment:
    """Rows of inputs (axis 0 of every array) that one budget check covers."""

    name: str
    file: str
    sha256: str
    arrays: dict[str, Any]  # input name -> numpy array, rows on axis 0
    labels: Any = None  # numpy array with one label per row, or None
    key: str | None = None  # the segment-key value this segment was split on

    @property
    def rows(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0])

    def to_dict(self) -> dict:
        return {"name": self.name, "file": self.file, "sha256": self.sha256, "rows": self.rows,
                "labels": self.labels is not None, "segment_key_value": self.key}


def check_rows(arrays: dict[str, Any], specs: list, flag: str, path: Path) -> int:
    """Every input present, with its dtype, rank and static sizes; one row count on axis 0."""
    rows = None
    for spec in specs:
        arr = input_array(arrays, spec, flag, path)
        if arr.ndim != len(spec.dims) or arr.ndim == 0:
            raise InputSpecError(f"{flag} {path}: '{spec.name}' has shape {list(arr.shape)}, the model input is "
                                 f"{list(spec.dims)}", "save arrays with the input's rank, rows on axis 0")
        for axis, (want_dim, got) in enumerate(zip(spec.dims, arr.shape)):
            if axis > 0 and isinstance(want_dim, int) and want_dim != got:
                raise InputSpecError(f"{flag} {path}: '{spec.name}' has {got} at axis {axis} where the model input "
                                     f"is fixed at {want_dim}", "save arrays whose static dims match the model input")
        if rows is None:
            rows = int(arr.shape[0])
        elif arr.shape[0] != rows:
            raise InputSpecError(f"{flag} {path}: '{spec.name}' has {arr.shape[0]} rows, another input {rows}",
                                 "every array holds the same rows on axis 0")
    if not rows:
        raise InputSpecError(f"{flag} {path}: no rows", "save at least one row per segment")
    return rows


def parse_eval(texts: Sequence[str]) -> list[tuple[str | None, Path]]:
    """`--eval tail=tail.npz` or `--eval data.npz` (named by --segment-key values or the file stem)."""
    out = []
    for text in texts:
        name, sep, file = text.partition("=")
        if not sep:
            name, file = "", text
        name = name.strip()
        if sep and not re.fullmatch(r"[\w.-]+", name):  # letters of any script, digits, '_', '-', '.'
            raise InputSpecError(f"--eval '{text}': segment name '{name}' must be letters, digits, '_', '-', '.'",
                                 "e.g. --eval tail=data/tail.npz")
        out.append((name or None, Path(file.strip())))
    return out


def load_segments(evals: Sequence[tuple[str | None, Path]], specs: list, *, labels_key: str | None = None,
                  segment_key: str | None = None) -> list[Segment]:
    """Read every `--eval` file; split by `segment_key` when given; labels under `labels_key`."""
    import numpy as np

    from onnxtax.core.files import sha256_file

    segments: list[Segment] = []
    for name, path in evals:
        arrays = read_npz(path, "--eval")
        sha = sha256_file(path)
        rows = check_rows(arrays, specs, "--eval", path)
        inputs = {s.name: arrays[s.name] for s in specs}
        labels = _column(arrays, labels_key, rows, path, "--labels") if labels_key else None
        if segment_key is None:
            segments.append(Segment(name or path.stem, str(path), sha, inputs, labels))
            continue
        keys = _column(arrays, segment_key, rows, path, "--segment-key")
        for value in sorted(set(keys.tolist()), key=str):
            idx = np.flatnonzero(keys == value)
            label = f"{name}/{value}" if name else str(value)
            segments.append(Segment(label, str(path), sha, {k: v[idx] for k, v in inputs.items()},
                                    labels[idx] if labels is not None else None, str(value)))
    seen: set[str] = set()
    for seg in segments:
        if seg.name in seen:
            raise InputSpecError(f"two segments are named '{seg.name}'", "name each --eval NAME=FILE differently")
        seen.add(seg.name)
    if not segments:
        raise InputSpecError("no --eval data: quantization is approved on data segments",
                             "give --eval NAME=FILE.npz per segment (arrays keyed by input name)")
    return segments


def _column(arrays: dict, key: str, rows: int, path: Path, flag: str):
    if key not in arrays:
        raise InputSpecError(f"{flag} {key}: {path} has no array '{key}' (it has: {', '.join(arrays)})",
                             f"save it in the file: np.savez(file, ..., {key}=...)")
    col = arrays[key]
    if col.ndim != 1 or col.shape[0] != rows:
        raise InputSpecError(f"{flag} {key}: '{key}' in {path} has shape {list(col.shape)}, need one value per "
                             f"row ({rows})", "save a 1-D array with one entry per row")
    return col


def check_budget_segments(budgets: list[Budget], segments: list[Segment]) -> None:
    names = [s.name for s in segments]
    for b in budgets:
        if b.segment is not None and b.segment not in names and not fnmatch.filter(names, b.segment):
            raise InputSpecError(f"--budget names segment '{b.segment}', which no --eval defines",
                                 f"segments: {', '.join(names)}")
        if b.metric == "accuracy_drop" and all(s.labels is None for s in segments):
            raise InputSpecError("--budget accuracy_drop needs labels", "name the labels array with --labels KEY")


# --------------------------------------------------------------------------- metrics
def _rows2d(a):
    return a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(-1, 1)


def metrics_of(reference, candidate, *, thresholds: Sequence[float] = (), topk: Sequence[int] = (),
               labels=None, decision_threshold: float = 0.5) -> dict[str, float | None]:
    """Every metric that applies to this output, candidate against the FP32 reference, over the rows
    finite on both sides (a NaN row agrees with a NaN row at every threshold: it proves nothing).
    With no such row every metric is None, "not compared", which fails any budget."""
    import numpy as np

    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(candidate, dtype=np.float64)
    if ref.ndim and ref.shape == got.shape:
        finite = np.isfinite(_rows2d(ref)).all(axis=1) & np.isfinite(_rows2d(got)).all(axis=1)
        if not finite.all():
            ref, got = ref[finite], got[finite]
            labels = None if labels is None else np.asarray(labels).reshape(-1)[finite]
            if not finite.any():
                names = ["max_abs", "mean_abs", "cosine", *(f"agreement@{t:g}" for t in thresholds),
                         *(f"top{k}" for k in sorted(set(topk) | {1})),
                         *(("accuracy_fp32", "accuracy", "accuracy_drop") if labels is not None else ())]
                return dict.fromkeys(names, None)
    out: dict[str, float | None] = {}
    diff = np.abs(got - ref)
    out["max_abs"] = float(diff.max()) if diff.size else 0.0
    out["mean_abs"] = float(diff.mean()) if diff.size else 0.0
    r2, g2 = _rows2d(ref), _rows2d(got)
    nr, ng = np.linalg.norm(r2, axis=1), np.linalg.norm(g2, axis=1)
    dot = (r2 * g2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where((nr == 0) & (ng == 0), 1.0, dot / np.maximum(nr * ng, 1e-300))
    out["cosine"] = float(cos.min()) if cos.size else 1.0
    for t in thresholds:
        out[f"agreement@{t:g}"] = float(((ref > t) == (got > t)).mean()) if ref.size else 1.0
    classes = ref.shape[-1] if ref.ndim > 1 else 1
    if classes > 1:
        rc = ref.reshape(-1, classes)
        gc = got.reshape(-1, classes)
        want = rc.argmax(axis=1)
        for k in sorted(set(topk) | {1}):
            kk = min(k, classes)
            top = np.argsort(-gc, axis=1)[:, :kk]
            out[f"top{k}"] = float((top == want[:, None]).any(axis=1).mean())
    if labels is not None:
        acc_ref = accuracy(ref, labels, decision_threshold)
        acc_got = accuracy(got, labels, decision_threshold)
        out["accuracy_fp32"] = acc_ref
        out["accuracy"] = acc_got
        out["accuracy_drop"] = 100.0 * (acc_ref - acc_got)
    return out


def accuracy(outputs, labels, threshold: float = 0.5) -> float:
    """Binary outputs (one value per row): p > threshold; otherwise argmax over the last axis."""
    import numpy as np

    out = np.asarray(outputs)
    labels = np.asarray(labels).reshape(-1)
    per_row = out.reshape(out.shape[0], -1)
    if per_row.shape[1] == 1:
        pred = (per_row[:, 0] > threshold).astype(np.int64)
    else:
        pred = per_row.argmax(axis=1)
    return float((pred == labels.astype(np.int64)).mean()) if labels.size else 1.0


def worst(metric: str, values: Sequence[float | None]) -> float | None:
    """The worst of several values of one metric (lowest agreement, largest difference)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    if metric.startswith(HIGHER_IS_BETTER) or metric in ("accuracy",):
        return min(vals)
    return max(vals)


@dataclass
class MetricPlan:
    """Which metrics to compute for an output, from the budgets and the output's shape."""

    thresholds: list[float] = field(default_factory=list)
    topk: list[int] = field(default_factory=list)
    decision_threshold: float = 0.5
    decisions: bool = True  # the output is a decision (a thresholded score, a class): "decisions change" means something

    @classmethod
    def from_budgets(cls, budgets: list[Budget], output_shape: Sequence[int]) -> "MetricPlan":
        thresholds = sorted({float(b.metric.split("@", 1)[1]) for b in budgets if b.metric.startswith("agreement@")})
        topk = sorted({int(b.metric[3:]) for b in budgets if b.metric.startswith("top")})
        per_row = math.prod(output_shape[1:]) if len(output_shape) > 1 else 1
        if not thresholds and per_row == 1:
            thresholds = [0.5]  # a binary score: its decision agreement is what users read first
        # an embedding judged by cosine or max_abs makes no decision: no "decisions change" for it
        decisions = bool(thresholds or topk) or any(b.metric == "accuracy_drop" for b in budgets)
        return cls(thresholds, topk, thresholds[0] if thresholds else 0.5, decisions)

    def compute(self, reference, candidate, labels=None) -> dict[str, float]:
        return metrics_of(reference, candidate, thresholds=self.thresholds, topk=self.topk, labels=labels,
                          decision_threshold=self.decision_threshold)


# --------------------------------------------------------------------------- evaluation
@dataclass
class Check:
    provider: str
    segment: str
    metric: str
    limit: float
    direction: str
    value: float | None
    aggregate: float | None
    passed: bool

    def line(self) -> str:
        if self.value is None:
            return (f"{self.provider} {self.segment}: {self.metric} not compared: no row has finite outputs on both "
                    f"sides, so the budget {'>=' if self.direction == 'min' else '<='} {self.limit:g} cannot hold")
        word = "below" if self.direction == "min" else "above"
        rel = ">=" if self.direction == "min" else "<="
        agg = "" if self.aggregate is None else f" (aggregate {_num(self.aggregate)}" + (
            ", within the budget: an aggregate gate would have approved it)"
            if Budget(self.metric, self.limit).holds(self.aggregate) else ")")
        return (f"{self.provider} {self.segment}: {self.metric} {_num(self.value)} {word} the budget "
                f"{rel} {self.limit:g}{agg}")

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class SegmentResult:
    provider: str
    segment: str
    rows: int
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)  # metric -> {row, batch, value}
    checks: list[Check] = field(default_factory=list)
    batch_dependence: dict | None = None

    def value(self, metric: str) -> float | None:
        return (self.metrics.get(metric) or {}).get("value")

    def to_dict(self) -> dict:
        return {"provider": self.provider, "segment": self.segment, "rows": self.rows, "metrics": self.metrics,
                "checks": [c.to_dict() for c in self.checks], "batch_dependence": self.batch_dependence}


@dataclass
class Evaluation:
    segments: list[SegmentResult] = field(default_factory=list)
    aggregate: list[SegmentResult] = field(default_factory=list)

    @property
    def failing(self) -> list[Check]:
        return [c for s in self.segments for c in s.checks if not c.passed]

    @property
    def passed(self) -> bool:
        return bool(self.segments) and not self.failing

    def to_dict(self) -> dict:
        return {"passed": self.passed, "segments": [s.to_dict() for s in self.segments],
                "aggregate": [s.to_dict() for s in self.aggregate], "failing": [c.to_dict() for c in self.failing]}


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}"


class SegmentRows:
    """Runs one output of a model over every segment: one row per request, and in mixed batches."""

    def __init__(self, segments: list[Segment], mapping: dict[str, str], output_index: int, batch_size: int,
                 seed: int):
        import numpy as np

        self.segments, self.mapping, self.index, self.batch_size = segments, mapping, output_index, batch_size
        self.mixed = len({tuple((k, v.shape[1:]) for k, v in s.arrays.items()) for s in segments}) == 1
        sizes = [s.rows for s in segments]
        self.bounds = np.cumsum([0] + sizes)
        self.order = np.random.default_rng(seed).permutation(int(self.bounds[-1]))

    def one_at_a_time(self, run: Callable[[dict], Any]) -> list[Any]:
        import numpy as np

        return [np.concatenate([run({k: v[i:i + 1] for k, v in s.arrays.items()}) for i in range(s.rows)])
                for s in self.segments]

    def batched(self, run: Callable[[dict], Any]) -> list[Any]:
        """Mixed batches across segments (a server's batches); per segment when their shapes differ."""
        import numpy as np

        if not self.mixed:
            return [np.concatenate([run({k: v[i:i + self.batch_size] for k, v in s.arrays.items()})
                                    for i in range(0, s.rows, self.batch_size)]) for s in self.segments]
        names = list(self.segments[0].arrays)
        every = {k: np.concatenate([s.arrays[k] for s in self.segments]) for k in names}
        pieces = []
        for i in range(0, len(self.order), self.batch_size):
            idx = self.order[i:i + self.batch_size]
            pieces.append(run({k: v[idx] for k, v in every.items()}))
        out = np.empty_like(np.concatenate(pieces))
        out[self.order] = np.concatenate(pieces)
        return [out[self.bounds[j]:self.bounds[j + 1]] for j in range(len(self.segments))]

    def session_runner(self, session) -> Callable[[dict], Any]:
        def run(arrays: dict) -> Any:
            return session.run(None, {self.mapping[k]: v for k, v in arrays.items() if k in self.mapping})[self.index]
        return run


def evaluate_segments(runs: dict[str, dict[str, list[Any]]], reference: list[Any], segments: list[Segment],
              budgets: list[Budget], plan: MetricPlan) -> Evaluation:
    """runs: provider -> {"row": outputs per segment, "batch": ...}; checks every segment's budgets."""
    import numpy as np

    ev = Evaluation()
    everything = np.concatenate(reference)
    labels_all = (np.concatenate([s.labels for s in segments])
                  if all(s.labels is not None for s in segments) else None)
    for provider, modes in runs.items():
        agg = SegmentResult(provider, "(aggregate)", int(everything.shape[0]))
        per_mode = {m: plan.compute(everything, np.concatenate(outs), labels_all) for m, outs in modes.items()}
        agg.metrics = _combine(per_mode)
        ev.aggregate.append(agg)
        for j, seg in enumerate(segments):
            res = SegmentResult(provider, seg.name, seg.rows)
            per_mode = {m: plan.compute(reference[j], outs[j], seg.labels) for m, outs in modes.items()}
            res.metrics = _combine(per_mode)
            if "row" in modes and "batch" in modes:
                res.batch_dependence = _batch_dependence(modes["row"][j], modes["batch"][j], plan)
            for b in budgets_for(budgets, seg.name):
                value = res.value(b.metric)
                if b.metric == "accuracy_drop" and seg.labels is None:
                    continue
                res.checks.append(Check(provider, seg.name, b.metric, b.limit, b.to_dict()["direction"], value,
                                        agg.value(b.metric), b.holds(value)))
            ev.segments.append(res)
    return ev


def _combine(per_mode: dict[str, dict[str, float]]) -> dict[str, dict[str, float | None]]:
    metrics: dict[str, dict[str, float | None]] = {}
    for mode, values in per_mode.items():
        for metric, v in values.items():
            metrics.setdefault(metric, {})[mode] = v
    for metric, by_mode in metrics.items():
        by_mode["value"] = worst(metric, [by_mode.get(m) for m in ("row", "batch")])
    return metrics


def _batch_dependence(row: Any, batch: Any, plan: MetricPlan) -> dict:
    import numpy as np

    diff = np.abs(row.astype(np.float64) - batch.astype(np.float64)).reshape(row.shape[0], -1)
    per_row = row.reshape(row.shape[0], -1)
    if per_row.shape[1] == 1:
        t = plan.decision_threshold
        flips = (per_row[:, 0] > t) != (batch.reshape(batch.shape[0], -1)[:, 0] > t)
    else:
        flips = per_row.argmax(axis=1) != batch.reshape(batch.shape[0], -1).argmax(axis=1)
    return {"max_abs": float(diff.max()) if diff.size else 0.0,
            "rows_changed": int((diff.max(axis=1) > 0).sum()) if diff.size else 0,
            "decisions_changed": int(flips.sum()) if plan.decisions else None}


def eager_reference(module: Any, specs: list, rows: SegmentRows, spec_text: str,
                    output_names: Sequence[str] = (), artifact_name: str = "the artifact") -> list[Any]:
    """The FP32 eager outputs per segment (the reference), in batches of the evaluation batch size.
    On one torch thread: on a busy 2-core CI host, torch's two-thread pool made these small
    batches 20-60x slower here (0.5-1.3 s vs 0.02 s for 2000 rows of the fraud MLP)."""
    import numpy as np
    import torch

    from onnxtax.core.reference import EagerReference

    source = EagerReference(module, specs)
    out = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for seg in rows.segments:
            pieces = []
            for i in range(0, seg.rows, rows.batch_size):
                arrays = {k: v[i:i + rows.batch_size] for k, v in seg.arrays.items()}
                where = f"segment {seg.name} rows {i}-{i + len(next(iter(arrays.values()))) - 1}"
                outputs = source(arrays, where, seg.file)
                if output_names:  # the SPEC's model returns what the graph returns, or it is another model
                    from onnxtax.core.identity import check_outputs_match

                    check_outputs_match(len(outputs), list(output_names), artifact_name, spec_text)
                if rows.index >= len(outputs):
                    raise InputSpecError(f"{spec_text} returns {len(outputs)} outputs; the ONNX output "
                                         f"#{rows.index} has no counterpart", "choose the output with --metric-output")
                pieces.append(outputs[rows.index])
            out.append(np.concatenate(pieces))
    finally:
        torch.set_num_threads(threads)
    return out
