"""Building INT8 candidates and judging them: each build run on every segment, one row at a time
and batched; the nodes adding the most error kept in FP32 (auto-exclude); FP32 vs INT8 latency."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from onnxtax.core import defaults
from onnxtax.core.errors import CheckFailed
from onnxtax.core.progress import Progress
from onnxtax.quantize.graph import BuildSettings, NodeOrigin
from onnxtax.quantize.report import Candidate, Excluded, Latency, QuantizeReport
from onnxtax.quantize.segments import Evaluation, MetricPlan, SegmentRows, evaluate_segments


LOCALISE_ROWS = 256  # rows of the failing segments the per-node error is measured on

SUSPECTS = 3  # nodes with the largest added error, each tried in FP32 before one is kept there

COST_EACH = 4  # up to this many nodes kept in FP32, each one's cost in speed is measured (one build each)


def excluded_node(origins: dict[str, NodeOrigin], name: str, reason: str, added: float | None = None) -> Excluded:
    origin = origins.get(name) or NodeOrigin(name, "?", None, None, None)
    return Excluded(origin, reason, added)


class BuildSearch:
    """What every build of one run shares: the FP32 graph, data, sessions' providers, reference."""

    def __init__(self, fp32: Path, work: Path, calibration, requests, rows: SegmentRows, reference, segments, budgets,
                 plan: MetricPlan, origins: dict[str, NodeOrigin], say: Progress):
        self.fp32, self.work, self.calibration, self.requests = fp32, work, calibration, requests
        self.rows, self.reference, self.segments, self.budgets, self.plan = rows, reference, segments, budgets, plan
        self.origins, self.say, self.count = origins, say, 0

    def build(self, settings: BuildSettings) -> tuple[Path | None, str | None]:
        from onnxtax.quantize.graph import build as build_int8

        self.count += 1
        path = self.work / f"int8-{self.count}.onnx"
        try:
            build_int8(settings, self.fp32, path, self.calibration)
        except Exception as exc:  # noqa: BLE001 - ORT's quantizer raises anything from anywhere
            return None, f"ORT's quantizer failed: {type(exc).__name__}: {str(exc)[:200]}"
        return path, None

    def evaluate(self, path: Path) -> tuple[Evaluation | None, str | None]:
        from onnxtax.core.providers import ort_error_summary, open_session

        runs = {}
        for req in self.requests:
            try:
                session = open_session(path, req, record_placement=False)
                run = self.rows.session_runner(session)
                runs[req.label] = {"row": self.rows.one_at_a_time(run), "batch": self.rows.batched(run)}
            except Exception as exc:  # noqa: BLE001 - a build ORT cannot load or run is a failed build
                line, node = ort_error_summary(exc.__cause__ or exc)
                return None, f"ONNX Runtime cannot run it on {req.label}: {line}" + (f" (node {node})" if node else "")
        return evaluate_segments(runs, self.reference, self.segments, self.budgets, self.plan), None

    def candidate(self, settings: BuildSettings, excluded: list[Excluded]) -> Candidate:
        self.say(f"quantizing: {settings.mode}" + (f", {len(settings.excluded)} nodes in FP32" if settings.excluded
                                                   else ""))
        cand = Candidate(settings, excluded=list(excluded))
        cand.path, cand.error = self.build(settings)
        if cand.path is not None:
            from onnxtax.quantize.graph import file_size

            cand.size_bytes = file_size(cand.path)
            self.say(f"evaluating {cand.label} on {len(self.segments)} segments, one row at a time and batched")
            cand.evaluation, cand.error = self.evaluate(cand.path)
        return cand

    def auto_exclude(self, cand: Candidate, limit: int) -> Candidate:
        """Keep the node adding the most error (on the failing segments' rows) in FP32, re-quantize, repeat."""
        import numpy as np

        from onnxtax.quantize.graph import node_errors, quantizable_op_types

        allowed = quantizable_op_types(cand.settings.mode, cand.settings.format)
        steps: list[dict] = []
        auto: list[Excluded] = []
        while not cand.passed and cand.error is None and len(auto) < limit:
            assert cand.evaluation is not None and cand.path is not None
            failing = {c.segment for c in cand.evaluation.failing}
            idx = [j for j, s in enumerate(self.segments) if s.name in failing]
            feeds = {k: np.concatenate([self.segments[j].arrays[k] for j in idx])[:LOCALISE_ROWS]
                     for k in self.segments[0].arrays} if self.rows.mixed else \
                {k: v[:LOCALISE_ROWS] for k, v in self.segments[idx[0]].arrays.items()}
            probe = cand.path
            if cand.settings.mode == "static" and cand.settings.format == "qoperator":
                # QOperator keeps no float tensors between nodes: localise on its QDQ twin (same ranges)
                twin = BuildSettings("static", "qdq", cand.settings.per_channel, cand.settings.calibration_method,
                                     cand.settings.excluded)
                probe, _ = self.build(twin)
                if probe is None:
                    break
            self.say(f"auto-exclude: measuring per-node error on {', '.join(sorted(failing))}")
            graph_feeds = {self.rows.mapping[k]: v for k, v in feeds.items() if k in self.rows.mapping}
            errors = node_errors(self.fp32, probe, graph_feeds, self.work, allowed)
            suspects = [e for e in errors if e.node not in cand.settings.excluded and e.op_type in allowed
                        and e.added_error > 0][:SUSPECTS]
            if not suspects:
                steps.append({"excluded": None, "added_error": None, "failing": len(cand.evaluation.failing),
                              "note": "no quantized node adds error on the failing rows"})
                break
            trials = []
            for e in suspects:  # confirm the ranking: re-quantize with each suspect in FP32
                ex = excluded_node(self.origins, e.node, "auto", e.added_error)
                settings = BuildSettings(cand.settings.mode, cand.settings.format, cand.settings.per_channel,
                                         cand.settings.calibration_method, cand.settings.excluded + (e.node,))
                trial = self.candidate(settings, cand.excluded + [ex])
                if trial.evaluation is not None and trial.error is None:
                    trials.append((shortfall(trial.evaluation), len(trials), trial, ex))
            if not trials:
                break
            _score, _i, nxt, ex = min(trials, key=lambda t: (t[0], t[1]))
            auto.append(ex)
            steps.append({"excluded": ex.origin.name, "module": ex.origin.module, "added_error": ex.added_error,
                          "tried": [e.node for e in suspects], "failing": len(nxt.evaluation.failing)})
            cand = nxt
        cand.steps = steps
        return cand


def shortfall(ev: Evaluation) -> tuple[int, float]:
    """How far a build is from passing: failing checks, then their summed relative distance to the limit."""
    total = 0.0
    for c in ev.failing:
        total += math.inf if c.value is None else abs(c.value - c.limit) / max(abs(c.limit), 1e-12)
    return len(ev.failing), total


def geomean_speedup(cand: Candidate) -> float:
    values = [lat.speedup for lat in cand.latency if lat.speedup > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else 0.0


def measure_latency(ctx: BuildSearch, report: QuantizeReport, fp32: Path, batch_sizes: Sequence[int] | None,
             min_time: float) -> None:
    """FP32 vs every build on every provider at bench's batch sizes, one interleaved measurement per
    provider and batch size; with nodes kept in FP32, also each of those nodes quantized again, so
    each one's cost in speed is measured, not estimated."""
    import numpy as np

    from onnxtax.bench import time_onnx_models

    built = [c for c in report.candidates if c.path is not None and c.evaluation is not None]
    if not built:
        return
    variants: dict[str, Path] = {}
    for ci, cand in enumerate(built):
        names = [ex.origin.name for ex in cand.excluded]
        each = names if len(names) <= COST_EACH else []
        for key, rest in [(f"c{ci}-{n}", tuple(x for x in cand.settings.excluded if x != n)) for n in each] + (
                [(f"c{ci}-all", ())] if len(names) > 1 else []):
            path, _ = ctx.build(BuildSettings(cand.settings.mode, cand.settings.format, cand.settings.per_channel,
                                              cand.settings.calibration_method, rest))
            if path is not None:
                variants[key] = path
    seg = ctx.segments[0]
    for req in ctx.requests:
        for bs in list(batch_sizes or defaults.BENCH_BATCH_SIZES):
            ctx.say(f"timing FP32 vs INT8 on {req.label} at batch {bs}")
            reps = -(-bs // seg.rows)
            feeds = {ctx.rows.mapping[k]: np.concatenate([v] * reps)[:bs] for k, v in seg.arrays.items()
                     if k in ctx.rows.mapping}
            models = {"fp32": fp32, **{f"c{i}": c.path for i, c in enumerate(built)}, **variants}
            try:
                stats = time_onnx_models(models, req, feeds, min_time=min_time)  # type: ignore[arg-type]
            except CheckFailed as exc:  # the verdict stands; only the estimate beside it is missing
                report.notes.append(f"latency not measured on {req.label} at batch {bs}: {exc.message}")
                continue
            for i, cand in enumerate(built):
                cand.latency.append(Latency(req.label, bs, stats["fp32"], stats[f"c{i}"]))
                if req is not ctx.requests[0]:
                    continue
                for ex in cand.excluded:
                    key = f"c{i}-{ex.origin.name}"
                    if key in stats:
                        ex.cost_us = ex.cost_us or {}
                        ex.cost_us[bs] = (stats[f"c{i}"].p50_ms - stats[key].p50_ms) * 1e3
                if f"c{i}-all" in stats:
                    cand.exclusion_cost_us = cand.exclusion_cost_us or {}
                    cand.exclusion_cost_us[bs] = (stats[f"c{i}"].p50_ms - stats[f"c{i}-all"].p50_ms) * 1e3
