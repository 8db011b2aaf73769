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

The report and its JSON schema: onnxtax.quantize.report; the builds and the search for nodes to
keep in FP32: onnxtax.quantize.search.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from onnxtax.core import defaults
from onnxtax.core.artifact import Artifact, open_artifact
from onnxtax.core.identity import check_model_matches
from onnxtax.core.errors import InputSpecError
from onnxtax.core.progress import Progress
from onnxtax.quantize.graph import BuildSettings, NodeOrigin
from onnxtax.quantize.options import QuantizeOptions
from onnxtax.quantize.report import Candidate, Excluded, QuantizeReport
from onnxtax.quantize.search import BuildSearch, excluded_node, geomean_speedup, measure_latency
from onnxtax.quantize.segments import MetricPlan, SegmentRows, eager_reference, evaluate_segments


def quantize_model(model: Any, onnx_path: str | Path | Artifact, output: str | Path,
                   options: QuantizeOptions | None = None, *, inputs: Sequence[str] | None = None,
                   progress: Progress | None = None, **kwargs: Any) -> QuantizeReport:
    """Quantize `onnx_path` to INT8 and write it to `output` only if every segment meets every budget.

    Args:
        model: the FP32 source (spec string, LoadedModel or nn.Module): the reference on every segment.
        onnx_path: the FP32 artifact, or an opened Artifact.
        options: QuantizeOptions, or its fields as keyword arguments (evals and budgets at least).
        inputs: the model's inputs as for the other stages; default the manifest's.

    Raises OnnxtaxError (exit 2) for unusable arguments and data, before any model is built.
    Budget failures are in the report, never raised; nothing is written unless it passed.
    """
    from onnxtax.core.files import unwritable_ancestor
    from onnxtax.core.report import package_versions
    from onnxtax.quantize.graph import file_size, match_excludes, node_origins, preprocess as preprocess_graph
    from onnxtax.quantize.segments import check_budget_segments, load_segments, parse_eval

    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    opts = QuantizeOptions.build(options, **kwargs)
    mode, quant_format, per_channel, calibration = opts.mode, opts.quant_format, opts.per_channel, opts.calibration
    calibration_method, labels, segment_key, output_name = (opts.calibration_method, opts.labels, opts.segment_key,
                                                            opts.output_name)
    exclude, auto_exclude, max_exclude, providers = opts.exclude, opts.auto_exclude, opts.max_exclude, opts.providers
    batch_size, bench_batch_sizes, bench_min_time = opts.batch_size, opts.bench_batch_sizes, opts.bench_min_time
    min_speedup, preprocess, seed = opts.min_speedup, opts.preprocess, opts.seed
    artifact = open_artifact(onnx_path)
    onnx_path, output = artifact.path, Path(output)
    if output.resolve() == onnx_path.resolve():
        raise InputSpecError(f"-o {output} is the FP32 model itself", "write the INT8 model to another file")
    if output.suffix != ".onnx":
        raise InputSpecError(f"-o {output} does not end in .onnx", "name it like model.int8.onnx")
    blocked = unwritable_ancestor(output)
    if blocked is not None or output.is_dir():
        raise InputSpecError(f"cannot write -o {output}: " + (f"{blocked[0]} {blocked[1]}" if blocked else
                                                              "it is a directory"), "give a path in a writable folder")
    modes = {"auto": ["dynamic", "static"], "dynamic": ["dynamic"], "static": ["static"]}[mode]
    budget_list = opts.budget_list()
    evals = opts.evals

    from onnxtax.core.inputs import resolve_inputs
    from onnxtax.core.loading import check_inputs_match, resolve_model
    from onnxtax.core.memory import StageMeter
    from onnxtax.core.providers import open_session, resolve_providers

    resolved = resolve_inputs(artifact, list(inputs) if inputs else None)
    specs, manifest = resolved.specs, resolved.manifest
    from onnxtax.core.hub.text import bind_text

    # text files (one sentence a line) are tokenized by an hf:/st: model's tokenizer, as .npz rows
    evals_read = [(name, bind_text(model, [path], "--eval")[0]) for name, path in parse_eval(evals)]
    segments = load_segments(evals_read, specs, labels_key=labels, segment_key=segment_key)
    check_budget_segments(budget_list, segments)
    calibration = bind_text(model, calibration, "--calibration")
    calib_arrays, calib_records = _calibration(calibration, specs) if calibration else (None, [])
    if calib_arrays is not None:
        calib_arrays = resolved.feeds(calib_arrays)
    if mode == "auto" and calib_arrays is None:
        modes = ["dynamic"]
    requests, _skipped = resolve_providers(list(providers) if providers else None)
    meter = StageMeter("quantize")
    meter.check(artifact.weights_bytes)
    loaded = resolve_model(model)
    loaded.module.eval()
    check_model_matches(loaded.module, artifact.manifest, artifact.path.name, loaded.spec)
    module = check_inputs_match(loaded.module, specs, loaded.spec)  # keyword-only inputs passed by name

    from onnxtax.core.files import sha256_file

    source = {"onnx": str(onnx_path), "sha256": sha256_file(onnx_path), "size_bytes": file_size(onnx_path),
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

    # the reference before any folder is made: a SPEC returning other outputs than the graph is refused here
    mapping = dict(resolved.onnx_names)
    out_names = list(resolved.output_names)
    if output_name is not None and output_name not in out_names:
        raise InputSpecError(f"--metric-output '{output_name}' is not an output of {onnx_path.name}",
                             f"outputs: {', '.join(out_names)}")
    # an st: export is judged on its sentence embedding unless told otherwise (manifest `derived`)
    primary = ((manifest or {}).get("derived") or {}).get("primary_output")
    index = out_names.index(output_name) if output_name else (out_names.index(primary) if primary in out_names else 0)
    report.output_name = out_names[index]
    rows = SegmentRows(segments, mapping, index, batch_size, seed)

    say("running the FP32 eager model on every segment")
    reference = eager_reference(module, specs, rows, loaded.spec, resolved.output_names, onnx_path.name)

    from onnxtax.core.files import staging_dir

    with staging_dir(output.parent) as staging:
        work = staging / "scratch"  # builds and probes; the published files are staged beside it
        work.mkdir()
        fp32 = onnx_path
        if preprocess:
            say("pre-processing (ORT quant_pre_process)")
            why = preprocess_graph(onnx_path, work / "preprocessed.onnx")
            if why is None:
                fp32 = work / "preprocessed.onnx"
            else:
                report.notes.append(why)
        import onnx

        origins = node_origins(onnx.load(str(fp32), load_external_data=False))
        user_excluded = match_excludes(exclude, origins)

        fp32_sessions = {r.label: open_session(fp32, r, record_placement=False) for r in requests}
        plan = MetricPlan.from_budgets(budget_list, reference[0].shape)
        fp32_runs = {p: {"batch": rows.batched(rows.session_runner(s))} for p, s in fp32_sessions.items()}
        report.fp32 = evaluate_segments(fp32_runs, reference, segments, budget_list, plan)
        report.notes += [f"the FP32 ONNX model itself misses a budget ({chk.line()}): the export differs from the "
                         "eager model there before any quantization; `onnxtax parity` shows where"
                         for chk in report.fp32.failing]
        context = BuildSearch(fp32, work, calib_arrays, requests, rows, reference, segments, budget_list, plan, origins,
                           say)
        for m in modes:
            settings = BuildSettings(m, quant_format, per_channel, calibration_method, tuple(user_excluded))
            cand = context.candidate(settings, [excluded_node(origins, n, "--exclude") for n in user_excluded])
            if auto_exclude and cand.error is None and not cand.passed:
                cand = context.auto_exclude(cand, max_exclude)
            report.candidates.append(cand)
        for c in report.candidates:
            if c.error is not None:
                report.problems.append(f"{c.label}: {c.error}")
        measure_latency(context, report, fp32, bench_batch_sizes, bench_min_time)
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
            report.chosen = max(passing, key=lambda i: geomean_speedup(report.candidates[i]))
            say("writing the INT8 model and its manifest")
            _publish(report, report.candidates[report.chosen], manifest, specs, output, staging)
    report.duration_s = time.perf_counter() - t0
    report.memory = meter.record()
    return report


def check_quantized(model: Any, onnx_path: str | Path | Artifact, *, providers: Sequence[str] | None = None,
                    progress: Progress | None = None) -> QuantizeReport:
    """Re-check an INT8 artifact `onnxtax quantize` wrote against its recorded segments and budgets
    (what `onnxtax parity` does for a quantized artifact): the same data files (checked by
    sha256), the FP32 eager model as reference, rows one at a time and batched."""
    from onnxtax.core.errors import ManifestError
    from onnxtax.core.inputs import resolve_inputs
    from onnxtax.core.files import sha256_file
    from onnxtax.core.loading import check_inputs_match, resolve_model
    from onnxtax.core.memory import StageMeter
    from onnxtax.core.providers import open_session, resolve_providers
    from onnxtax.core.report import package_versions
    from onnxtax.quantize.segments import Budget, load_segments

    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    artifact = open_artifact(onnx_path)
    onnx_path = artifact.path
    resolved = resolve_inputs(artifact, None)
    specs = resolved.specs
    q = artifact.quantization
    if q is None:
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
    from onnxtax.core.hub.text import bind_text

    evals = [(name, bind_text(model, [path], "--eval")[0]) for name, path in evals]
    segments = [s for s in load_segments(evals, specs, labels_key=evaluation.get("labels"),
                                         segment_key=evaluation.get("segment_key")) if s.name in recorded]
    budgets = [Budget(b["metric"], float(b["limit"]), b.get("segment")) for b in q.get("budgets") or []]
    requests, _ = resolve_providers(list(providers) if providers else evaluation.get("providers"))
    meter = StageMeter("quantize")
    meter.check(artifact.weights_bytes, "parity-unshared")  # the eager model + one INT8 session
    loaded = resolve_model(model)
    loaded.module.eval()
    check_model_matches(loaded.module, artifact.manifest, artifact.path.name, loaded.spec)
    module = check_inputs_match(loaded.module, specs, loaded.spec)  # keyword-only inputs passed by name
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
    reference = eager_reference(module, specs, rows, loaded.spec, resolved.output_names, onnx_path.name)
    plan = MetricPlan.from_budgets(budgets, reference[0].shape)
    fp32_path = Path(source_info.get("path") or "")
    if fp32_path.is_file() and sha256_file(fp32_path) == source_info.get("sha256"):
        fp32_runs = {r.label: {"batch": rows.batched(rows.session_runner(open_session(fp32_path, r,
                                                                                      record_placement=False)))}
                     for r in requests}
        report.fp32 = evaluate_segments(fp32_runs, reference, segments, budgets, plan)
    else:
        report.notes.append("the FP32 source artifact is not at its recorded path (or changed): no ORT FP32 column")
    ctx = BuildSearch(onnx_path, onnx_path.parent, None, requests, rows, reference, segments, budgets, plan, {}, say)
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


def _calibration(files: Sequence[str | Path], specs: list) -> tuple[dict[str, Any], list[dict]]:
    import numpy as np

    from onnxtax.core.files import sha256_file
    from onnxtax.quantize.segments import check_rows
    from onnxtax.core.specs import read_npz

    parts: dict[str, list] = {s.name: [] for s in specs}
    records = []
    for f in files:
        path = Path(f)
        arrays = read_npz(f, "--calibration")
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


def _publish(report: QuantizeReport, cand: Candidate, manifest: dict | None, specs: list, output: Path,
             work: Path) -> None:
    from onnxtax.core.files import publish, write_json_atomic
    from onnxtax.core.manifest import manifest_path_for, provenance_path_for, signature_path_for

    assert cand.path is not None
    staged = work / output.name
    shutil.copyfile(cand.path, staged)
    data = quantized_manifest(report, cand, manifest, staged, specs)
    manifest_staged = work / manifest_path_for(output).name
    write_json_atomic(manifest_staged, data)
    publish([(staged, output), (manifest_staged, manifest_path_for(output))])
    for signed in (signature_path_for(output), provenance_path_for(output)):
        signed.unlink(missing_ok=True)  # an earlier build's signature and provenance describe other bytes
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
    for key in ("signature", "provenance"):  # the FP32 artifact's: this file is signed on its own, or not at all
        data.pop(key, None)
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
