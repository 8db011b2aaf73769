"""`onnxtax quantize`: an INT8 model approved only when every data segment stays within its
budget against the FP32 eager model, with what it is worth in speed beside it.

The sequence a production sign-off follows: the FP32 eager model is the reference on every
segment (ORT FP32 is shown beside it, so export drift is not blamed on quantization);
dynamic quantization (weights INT8, activation scales computed per batch) and/or static
quantization (activation ranges calibrated on `--calibration` data) are built with ORT's
quantizers after its pre-processing; each build is run on every segment one row per request
*and* in mixed batches of `batch_size` rows (segments shuffled together, as a server batches
requests), and a metric's value is the worse of the two: dynamic quantization gives a row a
different answer depending on its batch, and that is reported as batch dependence. The
verdict holds only when every segment meets every budget on every provider; the aggregate
over all rows is shown beside each check so that what an aggregate gate would have approved
is visible. `auto_exclude` keeps the node adding the most error in FP32 and re-quantizes,
until the budgets hold or `max_exclude` nodes are kept. FP32 and INT8 latency come from
bench's harness. On approval the INT8 model and its manifest (the export manifest plus a
`quantization` section) are written atomically; on refusal nothing is written.

JSON schema of `QuantizeReport.to_dict()` ("onnxtax.quantize/1"; keys stable):
{
  "schema": "onnxtax.quantize/1", "passed": true, "exit_code": 0, "written": true,
  "source": {"onnx": "fraud.onnx", "sha256": "...", "size_bytes": 50112, "spec": "...", "class_name": "..."},
  "output": "fraud.int8.onnx", "output_name": "prob",
  "settings": {"mode": "auto", "format": "qdq", "per_channel": false, "calibration_method": "minmax",
               "batch_size": 64, "seed": 0, "auto_exclude": true, "max_exclude": 8, "providers": ["cpu"],
               "preprocess": true, "exclude": [], "labels": null, "segment_key": null, "output": null,
               "min_speedup": null},                  ("mode": "recheck" for `parity` on an INT8 artifact)
  "segments": [{"name": "tail", "file": "tail.npz", "sha256": "...", "rows": 200, "labels": true,
                "segment_key_value": null}],
  "calibration": [{"file": "cal.npz", "sha256": "...", "rows": 512}],
  "budgets": [{"segment": null | "tail", "metric": "agreement@0.5", "limit": 0.97, "direction": "min"}],
  "fp32": EVALUATION,                                 (ORT FP32 vs eager; informs, never gates)
  "candidates": [{"settings": {BuildSettings}, "passed": false, "error": null | "...", "size_bytes": 20480,
                  "speed_failures": ["cpu batch 1: speedup 0.68x below --min-speedup 1.2 (...)"],
                  "exclusion_cost_us": null | {"1": 2.5},   (all nodes kept in FP32 vs none, when 2 or more)
                  "evaluation": EVALUATION, "excluded": [EXCLUDED], "steps": [{"excluded": "node_linear",
                  "added_error": 0.41, "failing": 1}], "latency": [LATENCY]}],
  "chosen": 0 | null,                                 (index into candidates)
  "excluded": [EXCLUDED],                             (of the chosen candidate)
  EXCLUDED = {"node", "op_type", "module", "module_class", "source", "reason": "--exclude" | "auto",
              "added_error": 0.41 | null, "cost_us": {"1": 0.8, "64": 3.1} | null}
  EVALUATION = {"passed": true, "segments": [SEGMENT], "aggregate": [SEGMENT], "failing": [CHECK]}
  SEGMENT = {"provider": "cpu", "segment": "tail", "rows": 200,
             "metrics": {"agreement@0.5": {"row": 0.97, "batch": 0.96, "value": 0.96}, ...},
             "checks": [CHECK], "batch_dependence": null | {"max_abs": 0.01, "rows_changed": 12,
                                                          "decisions_changed": 3}}
  CHECK = {"provider", "segment", "metric", "limit", "direction", "value", "aggregate", "passed"}
  LATENCY = {"provider": "cpu", "batch_size": 1, "fp32": STATS, "int8": STATS, "speedup": 1.4,
             "fp32_per_s": .., "int8_per_s": ..}    (STATS as in bench)
  "size": {"fp32_bytes": .., "int8_bytes": .., "ratio": 2.4},
  "failures": ["cpu tail: agreement@0.5 0.675 below the budget >= 0.97 (aggregate 0.956)"],
  "notes": ["..."], "versions": {...}, "duration_s": 4.2,
  "memory": {"weights_bytes", "peak_rss_bytes", "peak_source", "peak_over_weights", "preflight"} (onnxtax.core.memory)
}
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from onnxtax.core import defaults
from onnxtax.core.errors import CheckFailed, InputSpecError, LoadError
from onnxtax.core.progress import Progress
from onnxtax.core.report import Verdict
from onnxtax.quantize.graph import CALIBRATION_METHODS, FORMATS, BuildSettings, NodeOrigin
from onnxtax.quantize.segments import (Budget, Evaluation, MetricPlan, Segment, SegmentRows, eager_reference,
                               evaluate_segments)

SCHEMA = "onnxtax.quantize/1"
LOCALISE_ROWS = 256  # rows of the failing segments the per-node error is measured on
SUSPECTS = 3  # nodes with the largest added error, each tried in FP32 before one is kept there
COST_EACH = 4  # up to this many nodes kept in FP32, each one's cost in speed is measured (one build each)



# --------------------------------------------------------------------------- results


@dataclass
class Excluded:
    origin: NodeOrigin
    reason: str  # "--exclude" | "auto"
    added_error: float | None = None
    cost_us: dict[int, float] | None = None  # batch size -> p50 µs slower than with the node quantized

    def to_dict(self) -> dict:
        return {**self.origin.to_dict(), "reason": self.reason, "added_error": self.added_error,
                "cost_us": {str(k): v for k, v in self.cost_us.items()} if self.cost_us is not None else None}


@dataclass
class Latency:
    provider: str
    batch_size: int
    fp32: Any  # bench.LatencyStats
    int8: Any

    @property
    def speedup(self) -> float:
        return self.fp32.p50_ms / self.int8.p50_ms

    def to_dict(self) -> dict:
        return {"provider": self.provider, "batch_size": self.batch_size, "fp32": self.fp32.to_dict(),
                "int8": self.int8.to_dict(), "speedup": self.speedup,
                "fp32_per_s": self.batch_size / (self.fp32.mean_ms / 1e3),
                "int8_per_s": self.batch_size / (self.int8.mean_ms / 1e3)}


@dataclass
class Candidate:
    settings: BuildSettings
    path: Path | None = None
    evaluation: Evaluation | None = None
    excluded: list[Excluded] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    latency: list[Latency] = field(default_factory=list)
    size_bytes: int | None = None
    error: str | None = None
    exclusion_cost_us: dict[int, float] | None = None  # batch -> p50 µs over the build with nothing kept in FP32

    speed_failures: list[str] = field(default_factory=list)  # --min-speedup not met

    @property
    def passed(self) -> bool:
        return (self.error is None and self.evaluation is not None and self.evaluation.passed
                and not self.speed_failures)

    @property
    def label(self) -> str:
        s = self.settings
        text = "dynamic" if s.mode == "dynamic" else f"static {s.format} {s.calibration_method}"
        return text + (" per-channel" if s.per_channel else "") + (
            f" ({len(s.excluded)} node{'s' if len(s.excluded) != 1 else ''} FP32)" if s.excluded else "")

    def to_dict(self) -> dict:
        return {"settings": self.settings.to_dict(), "label": self.label, "passed": self.passed, "error": self.error,
                "size_bytes": self.size_bytes, "speed_failures": list(self.speed_failures),
                "evaluation": self.evaluation.to_dict() if self.evaluation else None,
                "excluded": [e.to_dict() for e in self.excluded], "steps": list(self.steps),
                "latency": [lat.to_dict() for lat in self.latency],
                "exclusion_cost_us": {str(k): v for k, v in self.exclusion_cost_us.items()}
                if self.exclusion_cost_us is not None else None}


@dataclass
class QuantizeReport(Verdict):
    """The verdict of one `quantize_model` run; truthy when a build met every budget (and was written)."""

    source: dict
    output: str
    output_name: str = ""
    settings: dict = field(default_factory=dict)
    segments: list[Segment] = field(default_factory=list)
    calibration: list[dict] = field(default_factory=list)
    budgets: list[Budget] = field(default_factory=list)
    fp32: Evaluation | None = None
    candidates: list[Candidate] = field(default_factory=list)
    chosen: int | None = None
    written: bool = False
    problems: list[str] = field(default_factory=list)  # not tied to a budget (a build ORT could not make)
    notes: list[str] = field(default_factory=list)
    versions: dict = field(default_factory=dict)
    duration_s: float = 0.0
    memory: Any = None  # onnxtax.core.memory.MemoryRecord

    @property
    def passed(self) -> bool:  # type: ignore[override]
        return self.chosen is not None

    @property
    def best(self) -> Candidate | None:
        """The chosen build, else the one closest to passing (fewest failing checks)."""
        if self.chosen is not None:
            return self.candidates[self.chosen]
        built = [c for c in self.candidates if c.evaluation is not None]
        return min(built, key=lambda c: len(c.evaluation.failing), default=None)  # type: ignore[union-attr]

    @property
    def failures(self) -> list[str]:
        if self.passed:
            return []
        out = list(self.problems)
        for c in self.candidates:
            if c.evaluation is not None:
                out += [f"{c.label}: {chk.line()}" for chk in c.evaluation.failing]
            out += [f"{c.label}: {line}" for line in c.speed_failures]
        return out

    @property
    def size(self) -> dict:
        best = self.best
        fp32 = self.source.get("size_bytes")
        int8 = best.size_bytes if best else None
        return {"fp32_bytes": fp32, "int8_bytes": int8, "ratio": (fp32 / int8) if fp32 and int8 else None}

    def to_dict(self) -> dict:
        best = self.best
        return {
            "schema": SCHEMA, "passed": self.passed, "exit_code": self.exit_code, "written": self.written,
            "source": dict(self.source), "output": self.output, "output_name": self.output_name,
            "settings": dict(self.settings), "segments": [s.to_dict() for s in self.segments],
            "calibration": list(self.calibration), "budgets": [b.to_dict() for b in self.budgets],
            "fp32": self.fp32.to_dict() if self.fp32 else None,
            "candidates": [c.to_dict() for c in self.candidates], "chosen": self.chosen,
            "excluded": [e.to_dict() for e in best.excluded] if best else [],
            "size": self.size, "failures": self.failures, "notes": list(self.notes),
            "versions": dict(self.versions), "duration_s": self.duration_s,
            "memory": self.memory.to_dict() if self.memory else None,
        }


# --------------------------------------------------------------------------- the run


def quantize_model(model: Any, onnx_path: str | Path, output: str | Path, *, evals: Sequence[str],
                   budgets: Sequence[str | Budget], inputs: Sequence[str] | None = None,
                   mode: str = defaults.QUANTIZE_MODE, calibration: Sequence[str | Path] = (),
                   calibration_method: str = defaults.QUANTIZE_CALIBRATION_METHOD,
                   quant_format: str = defaults.QUANTIZE_FORMAT, per_channel: bool = False, labels: str | None = None,
                   segment_key: str | None = None, output_name: str | None = None, exclude: Sequence[str] = (),
                   auto_exclude: bool = False, max_exclude: int = defaults.QUANTIZE_MAX_EXCLUDE,
                   providers: Sequence[str] | None = None, batch_size: int = defaults.QUANTIZE_BATCH_SIZE,
                   bench_batch_sizes: Sequence[int] | None = None,
                   bench_min_time: float = defaults.QUANTIZE_BENCH_MIN_TIME,
                   min_speedup: float | None = None, preprocess: bool = True, seed: int = 0,
                   progress: Progress | None = None) -> QuantizeReport:
    """Quantize `onnx_path` to INT8 and write it to `output` only if every segment meets every budget.

    Args:
        model: the FP32 source (spec string or nn.Module): the reference on every segment.
        evals: `NAME=FILE.npz` (or `FILE.npz`) per segment; arrays keyed by input name, rows on axis 0.
        budgets: `METRIC=VALUE` or `SEGMENT:METRIC=VALUE` (see onnxtax.quantize.segments).
        mode: "dynamic", "static" (needs `calibration`), or "auto" (both; the fastest that passes).
        labels / segment_key: names of a label array and of an array splitting each file into segments.
        exclude: globs of node names or module paths kept in FP32; auto_exclude: find more, up to max_exclude.
        providers: where the metrics and latency are measured; default every compute provider.
        min_speedup: also require FP32 p50 / INT8 p50 >= this at every measured batch size and provider.

    Raises OnnxtaxError (exit 2) for unusable arguments and data, before any model is built.
    Budget failures are in the report, never raised; nothing is written unless it passed.
    """
    from onnxtax.quantize import graph as qg
    from onnxtax.core.files import unwritable_ancestor
    from onnxtax.core.report import package_versions
    from onnxtax.quantize.segments import check_budget_segments, load_segments, parse_budgets, parse_eval

    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    onnx_path, output = Path(onnx_path), Path(output)
    if not onnx_path.is_file():
        raise LoadError(f"ONNX model '{onnx_path}' does not exist", "export it first with `onnxtax export`")
    if output.resolve() == onnx_path.resolve():
        raise InputSpecError(f"-o {output} is the FP32 model itself", "write the INT8 model to another file")
    if output.suffix != ".onnx":
        raise InputSpecError(f"-o {output} does not end in .onnx", "name it like model.int8.onnx")
    blocked = unwritable_ancestor(output)
    if blocked is not None or output.is_dir():
        raise InputSpecError(f"cannot write -o {output}: " + (f"{blocked[0]} {blocked[1]}" if blocked else
                                                              "it is a directory"), "give a path in a writable folder")
    modes = {"auto": ["dynamic", "static"], "dynamic": ["dynamic"], "static": ["static"]}.get(mode)
    if modes is None:
        raise InputSpecError(f"unknown --mode '{mode}'", "use dynamic, static or auto")
    if quant_format not in FORMATS:
        raise InputSpecError(f"unknown --format '{quant_format}'", f"use {' or '.join(FORMATS)}")
    if calibration_method not in CALIBRATION_METHODS:
        raise InputSpecError(f"unknown --calibration-method '{calibration_method}'",
                             f"use one of: {', '.join(CALIBRATION_METHODS)}")
    if mode == "static" and not calibration:
        raise InputSpecError("--mode static needs calibration data",
                             "give --calibration FILE.npz with representative inputs (not the --eval data)")
    if min_speedup is not None and not (math.isfinite(min_speedup) and min_speedup > 0):
        raise InputSpecError(f"--min-speedup {min_speedup}: must be a number > 0", "e.g. --min-speedup 1.2")
    if batch_size < 1 or max_exclude < 0 or not bench_min_time > 0:
        raise InputSpecError("--batch-size must be >= 1, --max-exclude >= 0, --bench-min-time > 0")
    parsed = [b if isinstance(b, Budget) else None for b in budgets]
    budget_list = [b for b in parsed if b is not None] + parse_budgets([b for b in budgets if isinstance(b, str)])
    if not budget_list:
        raise InputSpecError("no --budget: a quantized model is approved against budgets per segment",
                             "e.g. --budget agreement@0.5=0.97 --budget tail:agreement@0.5=0.95")

    from onnxtax.core.inputs import resolve_inputs
    from onnxtax.core.loading import check_inputs_match, resolve_model
    from onnxtax.core.memory import StageMeter, onnx_weights_bytes
    from onnxtax.core.providers import open_session, resolve_providers

    resolved = resolve_inputs(onnx_path, list(inputs) if inputs else None)
    specs, manifest = resolved.specs, resolved.manifest
    segments = load_segments(parse_eval(evals), specs, labels_key=labels, segment_key=segment_key)
    check_budget_segments(budget_list, segments)
    calib_arrays, calib_records = _calibration(calibration, specs) if calibration else (None, [])
    if calib_arrays is not None:
        calib_arrays = resolved.feeds(calib_arrays)
    if mode == "auto" and calib_arrays is None:
        modes = ["dynamic"]
    requests, _skipped = resolve_providers(list(providers) if providers else None)
    meter = StageMeter("quantize")
    meter.check(onnx_weights_bytes(onnx_path))
    loaded = resolve_model(model)
    module = loaded.module
    module.eval()
    check_inputs_match(module, specs, loaded.spec)

    from onnxtax.core.files import sha256_file

    source = {"onnx": str(onnx_path), "sha256": sha256_file(onnx_path), "size_bytes": qg.file_size(onnx_path),
              "spec": None if loaded.in_memory else loaded.spec, "class_name": loaded.class_name}
    report = QuantizeReport(source, str(output), segments=segments, calibration=calib_records, budgets=budget_list,
                            versions=package_versions())
    if mode == "auto" and "static" not in modes:
        report.notes.append("auto mode tried dynamic quantization only: static needs --calibration data")
    report.settings = {"mode": mode, "format": quant_format, "per_channel": per_channel,
                       "calibration_method": calibration_method, "batch_size": batch_size, "seed": seed,
                       "auto_exclude": auto_exclude, "max_exclude": max_exclude,
                       "providers": [r.label for r in requests], "preprocess": preprocess,
                       "exclude": list(exclude), "labels": labels, "segment_key": segment_key,
                       "output": output_name, "min_speedup": min_speedup}

    from onnxtax.core.files import staging_dir

    with staging_dir(output.parent) as staging:
        work = staging / "scratch"  # builds and probes; the published files are staged beside it
        work.mkdir()
        fp32 = onnx_path
        if preprocess:
            say("pre-processing (ORT quant_pre_process)")
            why = qg.preprocess(onnx_path, work / "preprocessed.onnx")
            if why is None:
                fp32 = work / "preprocessed.onnx"
            else:
                report.notes.append(why)
        import onnx

        origins = qg.node_origins(onnx.load(str(fp32), load_external_data=False))
        user_excluded = qg.match_excludes(exclude, origins)

        fp32_sessions = {r.label: open_session(fp32, r, record_placement=False) for r in requests}
        mapping = dict(resolved.onnx_names)
        out_names = list(resolved.output_names)
        if output_name is not None and output_name not in out_names:
            raise InputSpecError(f"--metric-output '{output_name}' is not an output of {onnx_path.name}",
                                 f"outputs: {', '.join(out_names)}")
        index = out_names.index(output_name) if output_name else 0
        report.output_name = out_names[index]
        rows = SegmentRows(segments, mapping, index, batch_size, seed)

        say("running the FP32 eager model on every segment")
        reference = eager_reference(module, specs, rows, loaded.spec)
        plan = MetricPlan.from_budgets(budget_list, reference[0].shape)
        fp32_runs = {p: {"batch": rows.batched(rows.session_runner(s))} for p, s in fp32_sessions.items()}
        report.fp32 = evaluate_segments(fp32_runs, reference, segments, budget_list, plan)
        report.notes += [f"the FP32 ONNX model itself misses a budget ({chk.line()}): the export differs from the "
                         "eager model there before any quantization; `onnxtax parity` shows where"
                         for chk in report.fp32.failing]
        context = _Context(fp32, work, calib_arrays, requests, rows, reference, segments, budget_list, plan, origins,
                           say)
        for m in modes:
            settings = BuildSettings(m, quant_format, per_channel, calibration_method, tuple(user_excluded))
            cand = context.candidate(settings, [_excluded_node(origins, n, "--exclude") for n in user_excluded])
            if auto_exclude and cand.error is None and not cand.passed:
                cand = context.auto_exclude(cand, max_exclude)
            report.candidates.append(cand)
        for c in report.candidates:
            if c.error is not None:
                report.problems.append(f"{c.label}: {c.error}")
        _latency(context, report, fp32, bench_batch_sizes, bench_min_time)
        for c in report.candidates:
            if min_speedup is not None and c.evaluation is not None and c.evaluation.passed:
                c.speed_failures = [f"{lat.provider} batch {lat.batch_size}: speedup {lat.speedup:.2f}x below "
                                    f"--min-speedup {min_speedup:g} (FP32 p50 {lat.fp32.p50_ms * 1e3:.3g} µs, "
                                    f"INT8 {lat.int8.p50_ms * 1e3:.3g} µs)" for lat in c.latency
                                    if lat.speedup < min_speedup]
            slower = [lat for lat in c.latency if lat.speedup < 1]
            if c.passed and slower:
                report.notes.append(f"{c.label} is slower than FP32 at " + ", ".join(
                    f"batch {lat.batch_size} on {lat.provider} ({lat.speedup:.2f}x)" for lat in slower)
                    + ": quantizing saves less than the Quantize/DequantizeLinear work costs there")
        passing = [i for i, c in enumerate(report.candidates) if c.passed]
        if passing:
            report.chosen = max(passing, key=lambda i: _geomean_speedup(report.candidates[i]))
            say("writing the INT8 model and its manifest")
            _publish(report, report.candidates[report.chosen], manifest, specs, output, staging)
    report.duration_s = time.perf_counter() - t0
    report.memory = meter.record()
    return report


def check_quantized(model: Any, onnx_path: str | Path, *, providers: Sequence[str] | None = None,
                    progress: Progress | None = None) -> QuantizeReport:
    """Re-check an INT8 artifact `onnxtax quantize` wrote against its recorded segments and budgets
    (what `onnxtax parity` does for a quantized artifact): the same data files (checked by
    sha256), the FP32 eager model as reference, rows one at a time and batched."""
    from onnxtax.core.errors import ManifestError
    from onnxtax.core.inputs import resolve_inputs
    from onnxtax.core.files import sha256_file
    from onnxtax.core.loading import check_inputs_match, resolve_model
    from onnxtax.core.memory import StageMeter, onnx_weights_bytes
    from onnxtax.core.providers import open_session, resolve_providers
    from onnxtax.core.report import package_versions
    from onnxtax.quantize.segments import Budget, load_segments

    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    onnx_path = Path(onnx_path)
    resolved = resolve_inputs(onnx_path, None)
    specs, manifest = resolved.specs, resolved.manifest
    q = (manifest or {}).get("quantization")
    if not isinstance(q, dict):
        raise ManifestError(f"{onnx_path} has no quantization record in its manifest",
                            "quantize it with `onnxtax quantize`, or check an FP32 model with `onnxtax parity`")
    evaluation = q.get("evaluation") or {}
    evals: list[tuple[str | None, Path]] = []
    for seg in q.get("segments") or []:
        path = Path(seg["file"])
        if not path.is_file():
            raise InputSpecError(f"segment '{seg['name']}': its data {path} is gone",
                                 "restore the --eval file the model was approved on, or quantize again")
        if sha256_file(path) != seg.get("sha256"):
            raise InputSpecError(f"segment '{seg['name']}': {path} changed since the model was approved "
                                 "(sha256 differs)", "quantize again on the new data")
        if (None if evaluation.get("segment_key") else seg["name"], path) not in evals:
            evals.append((None if evaluation.get("segment_key") else seg["name"], path))
    recorded = {s["name"] for s in q.get("segments") or []}
    segments = [s for s in load_segments(evals, specs, labels_key=evaluation.get("labels"),
                                         segment_key=evaluation.get("segment_key")) if s.name in recorded]
    budgets = [Budget(b["metric"], float(b["limit"]), b.get("segment")) for b in q.get("budgets") or []]
    requests, _ = resolve_providers(list(providers) if providers else evaluation.get("providers"))
    meter = StageMeter("quantize")
    meter.check(onnx_weights_bytes(onnx_path), "parity-unshared")  # the eager model + one INT8 session
    loaded = resolve_model(model)
    loaded.module.eval()
    check_inputs_match(loaded.module, specs, loaded.spec)
    source_info = q.get("source") or {}
    report = QuantizeReport({"onnx": str(onnx_path), "sha256": sha256_file(onnx_path),
                             "size_bytes": source_info.get("size_bytes"), "spec": None if loaded.in_memory
                             else loaded.spec, "class_name": loaded.class_name}, str(onnx_path),
                            segments=segments, budgets=budgets, versions=package_versions())
    report.settings = {"mode": "recheck", "batch_size": int(evaluation.get("batch_size", defaults.QUANTIZE_BATCH_SIZE)),
                       "seed": int(evaluation.get("seed", 0)), "providers": [r.label for r in requests]}
    names = list(resolved.output_names)
    output_name = q.get("output_name") or names[0]
    rows = SegmentRows(segments, dict(resolved.onnx_names), names.index(output_name),
                 report.settings["batch_size"], report.settings["seed"])
    report.output_name = output_name
    say("running the FP32 eager model on every segment")
    reference = eager_reference(loaded.module, specs, rows, loaded.spec)
    plan = MetricPlan.from_budgets(budgets, reference[0].shape)
    fp32_path = Path(source_info.get("path") or "")
    if fp32_path.is_file() and sha256_file(fp32_path) == source_info.get("sha256"):
        fp32_runs = {r.label: {"batch": rows.batched(rows.session_runner(open_session(fp32_path, r,
                                                                                      record_placement=False)))}
                     for r in requests}
        report.fp32 = evaluate_segments(fp32_runs, reference, segments, budgets, plan)
    else:
        report.notes.append("the FP32 source artifact is not at its recorded path (or changed): no ORT FP32 column")
    ctx = _Context(onnx_path, onnx_path.parent, None, requests, rows, reference, segments, budgets, plan, {}, say)
    settings = BuildSettings(q.get("mode", "static"), q.get("format", "qdq") if q.get("mode") == "static" else "qdq",
                             bool(q.get("per_channel")), q.get("calibration_method") or "minmax",
                             tuple(q.get("nodes_to_exclude") or ()))
    cand = Candidate(settings, onnx_path, size_bytes=onnx_path.stat().st_size)
    say(f"evaluating {onnx_path.name} on {len(segments)} segments, one row at a time and batched")
    cand.evaluation, cand.error = ctx.evaluate(onnx_path)
    cand.excluded = [Excluded(NodeOrigin(e["node"], e.get("op_type", "?"), e.get("module"), e.get("module_class"),
                                         e.get("source")), e.get("reason", "?"), e.get("added_error"))
                     for e in q.get("excluded_nodes") or []]
    report.candidates.append(cand)
    if cand.error:
        report.problems.append(cand.error)
    if cand.passed:
        report.chosen = 0
    report.duration_s = time.perf_counter() - t0
    report.memory = meter.record()
    return report


def _excluded_node(origins: dict[str, NodeOrigin], name: str, reason: str, added: float | None = None) -> Excluded:
    origin = origins.get(name) or NodeOrigin(name, "?", None, None, None)
    return Excluded(origin, reason, added)


def _calibration(files: Sequence[str | Path], specs: list) -> tuple[dict[str, Any], list[dict]]:
    import numpy as np

    from onnxtax.core.files import sha256_file
    from onnxtax.quantize.segments import check_rows
    from onnxtax.core.specs import read_npz

    parts: dict[str, list] = {s.name: [] for s in specs}
    records = []
    for f in files:
        path = Path(f)
        arrays = read_npz(path, "--calibration")
        rows = check_rows(arrays, specs, "--calibration", path)
        for s in specs:
            parts[s.name].append(arrays[s.name])
        records.append({"file": str(path), "sha256": sha256_file(path), "rows": rows})
    try:
        merged = {k: np.concatenate(v) for k, v in parts.items()}
    except ValueError as exc:
        raise InputSpecError(f"--calibration files do not share their non-row sizes ({exc})",
                             "give calibration files with the same shapes apart from the rows") from exc
    return merged, records


class _Context:
    """What every build of one run shares: the FP32 graph, data, sessions' providers, reference."""

    def __init__(self, fp32: Path, work: Path, calibration, requests, rows: SegmentRows, reference, segments, budgets,
                 plan: MetricPlan, origins: dict[str, NodeOrigin], say: Progress):
        self.fp32, self.work, self.calibration, self.requests = fp32, work, calibration, requests
        self.rows, self.reference, self.segments, self.budgets, self.plan = rows, reference, segments, budgets, plan
        self.origins, self.say, self.count = origins, say, 0

    def build(self, settings: BuildSettings) -> tuple[Path | None, str | None]:
        from onnxtax.quantize import graph as qg

        self.count += 1
        path = self.work / f"int8-{self.count}.onnx"
        try:
            qg.build(settings, self.fp32, path, self.calibration)
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

        from onnxtax.quantize import graph as qg

        allowed = qg.quantizable_op_types(cand.settings.mode, cand.settings.format)
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
            errors = qg.node_errors(self.fp32, probe, graph_feeds, self.work, allowed)
            suspects = [e for e in errors if e.node not in cand.settings.excluded and e.op_type in allowed
                        and e.added_error > 0][:SUSPECTS]
            if not suspects:
                steps.append({"excluded": None, "added_error": None, "failing": len(cand.evaluation.failing),
                              "note": "no quantized node adds error on the failing rows"})
                break
            trials = []
            for e in suspects:  # confirm the ranking: re-quantize with each suspect in FP32
                ex = _excluded_node(self.origins, e.node, "auto", e.added_error)
                settings = BuildSettings(cand.settings.mode, cand.settings.format, cand.settings.per_channel,
                                         cand.settings.calibration_method, cand.settings.excluded + (e.node,))
                trial = self.candidate(settings, cand.excluded + [ex])
                if trial.evaluation is not None and trial.error is None:
                    trials.append((_shortfall(trial.evaluation), len(trials), trial, ex))
            if not trials:
                break
            _score, _i, nxt, ex = min(trials, key=lambda t: (t[0], t[1]))
            auto.append(ex)
            steps.append({"excluded": ex.origin.name, "module": ex.origin.module, "added_error": ex.added_error,
                          "tried": [e.node for e in suspects], "failing": len(nxt.evaluation.failing)})
            cand = nxt
        cand.steps = steps
        return cand


def _shortfall(ev: Evaluation) -> tuple[int, float]:
    """How far a build is from passing: failing checks, then their summed relative distance to the limit."""
    total = 0.0
    for c in ev.failing:
        total += math.inf if c.value is None else abs(c.value - c.limit) / max(abs(c.limit), 1e-12)
    return len(ev.failing), total


def _geomean_speedup(cand: Candidate) -> float:
    values = [lat.speedup for lat in cand.latency if lat.speedup > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else 0.0


def _latency(ctx: _Context, report: QuantizeReport, fp32: Path, batch_sizes: Sequence[int] | None,
             min_time: float) -> None:
    """FP32 vs every build on every provider at bench's batch sizes, one interleaved measurement per
    provider and batch size; with nodes kept in FP32, also each of those nodes quantized again, so
    each one's cost in speed is measured, not estimated."""
    import numpy as np

    from onnxtax.bench.run import time_onnx_models

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


def _publish(report: QuantizeReport, cand: Candidate, manifest: dict | None, specs: list, output: Path,
             work: Path) -> None:
    from onnxtax.core.files import publish, write_json_atomic
    from onnxtax.core.manifest import manifest_path_for

    assert cand.path is not None
    staged = work / output.name
    shutil.copyfile(cand.path, staged)
    data = quantized_manifest(report, cand, manifest, staged, specs)
    manifest_staged = work / manifest_path_for(output).name
    write_json_atomic(manifest_staged, data)
    publish([(staged, output), (manifest_staged, manifest_path_for(output))])
    report.written = True


def quantized_manifest(report: QuantizeReport, cand: Candidate, source_manifest: dict | None, staged: Path,
                       specs: list) -> dict:
    """The export manifest of the FP32 artifact, re-pointed at the INT8 file, plus `quantization`."""
    import copy
    from datetime import datetime, timezone

    import onnx

    from onnxtax.core.files import sha256_file
    from onnxtax.core.manifest import FORMAT_VERSION

    model = onnx.load(str(staged), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    data = copy.deepcopy(source_manifest) if source_manifest else {
        "format_version": FORMAT_VERSION, "model": {"spec": report.source.get("spec"),
                                                    "class_name": report.source.get("class_name")},
        "exporter": None, "inputs": [s.to_dict() for s in specs], "outputs": [],
        "dynamic_axes": {}, "checks": [], "warnings": []}
    evaluation = cand.evaluation
    assert evaluation is not None
    data.update({
        "created_utc": datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "artifact": {"file": staged.name, "sha256": sha256_file(staged), "size_bytes": staged.stat().st_size,
                     "external_data": []},
        "opset": opset, "ir_version": model.ir_version, "benchmark": None,
        "versions": report.versions,
        "quantization": {
            **cand.settings.to_dict(),
            "calibration_files": [{"file": c["file"], "sha256": c["sha256"], "rows": c["rows"]}
                                  for c in report.calibration] if cand.settings.mode == "static" else [],
            "excluded_nodes": [e.to_dict() for e in cand.excluded],
            "source": {"file": Path(report.source["onnx"]).name, "path": str(Path(report.source["onnx"]).resolve()),
                       "sha256": report.source["sha256"], "size_bytes": report.source["size_bytes"]},
            "output_name": report.output_name,
            "evaluation": {"batch_size": report.settings["batch_size"], "seed": report.settings["seed"],
                           "labels": report.settings.get("labels"), "segment_key": report.settings.get("segment_key"),
                           "providers": report.settings["providers"]},
            "segments": [dict(s.to_dict(), file=str(Path(s.file).resolve())) for s in report.segments],
            "budgets": [b.to_dict() for b in report.budgets],
            "metrics": [s.to_dict() for s in evaluation.segments + evaluation.aggregate],
            "size": {"fp32_bytes": report.source["size_bytes"], "int8_bytes": cand.size_bytes},
            "latency": [lat.to_dict() for lat in cand.latency],
        },
    })
    checks = [c for c in data.get("checks") or [] if isinstance(c, dict)]
    checks.append({"name": "quantization budgets", "passed": True,
                   "detail": f"{len(evaluation.segments)} segment result(s) within {len(report.budgets)} budget(s)"})
    data["checks"] = checks
    return data
