"""`onnxtax export`: write exactly the model that was asked for, or nothing.

torch.onnx reports success while writing something else than asked: another opset
(the dynamo exporter keeps opset 18 when down-conversion fails), dynamic axes renamed
or silently made static, batch sizes baked inside the graph, a sidecar `.onnx.data`.
Every one of those is checked here after the exporter ran, and only a model that
passed every check is renamed into place, together with its manifest.
"""

from __future__ import annotations

import dataclasses
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from onnxtax.core.errors import CheckFailed, InputSpecError, OnnxtaxError
from onnxtax.core.files import publish, staging_dir, unwritable_ancestor
from onnxtax.core.identity import check_stateless, module_identity, state_versions
from onnxtax.core.inputs import check_ranges, dynamic_shapes
from onnxtax.core.manifest import FORMAT_VERSION, manifest_path_for, provenance_path_for, signature_path_for
from onnxtax.core.progress import Progress, silent
from onnxtax.core.specs import InputSpec, SampleRecipe, export_sizes, parse_input_specs, read_data_file, symbols_of
from onnxtax.export.capture import Quiet
from onnxtax.export.errors import explain_export_error
from onnxtax.export.graph import (default_opset, io_records, lock_dynamic_axes, lock_opset, repair_output_dims,
                                  unify_custom_functions)
from onnxtax.export.registry import keep_torchlib_registry
from onnxtax.export.options import EXPORTERS, EXTERNAL_DATA_MODES, ExportOptions  # noqa: F401 (re-exported)
from onnxtax.export.result import CheckRecord, ExportResult
from onnxtax.export.save import EXTERNAL_DATA_THRESHOLD, check_written, needs_external, save, save_program
from onnxtax.export.smoke import eager_outputs, size_trials, smoke_run, torch_inputs

EXPORTER_REASONS = {
    "dynamo": "default: torch.export-based exporter, the one torch maintains; keeps data-dependent "
              "branches out (fails loudly) instead of freezing them",
    "torchscript": "requested: TorchScript tracing exporter (legacy; freezes Python branches and can bake sizes, "
                   "onnxtax checks for both)",
}


def _in_thread(fn, *args):
    """fn(*args) started in a thread; `.result()` waits for it and raises what it raised."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxtax-export")
    future = pool.submit(fn, *args)
    pool.shutdown(wait=False)
    return future


def _assumed_ranges(program, specs: list[InputSpec]) -> dict[str, dict]:
    """Shape constraints torch.export added that the ONNX file cannot carry, per declared axis:
    {"batch": {"min": 2 | None, "max": 32 | None}} (None: open; min 0/1 is no constraint)."""
    out: dict[str, dict] = {}
    try:
        ep = program.exported_program
        ranges = ep.range_constraints
        placeholders = [n for n in ep.graph.nodes if n.op == "placeholder"]
        user_inputs = ep.graph_signature.user_inputs
    except Exception:  # noqa: BLE001
        return out
    # symbol -> declared name, from the user inputs' fake tensor shapes
    sym_name: dict[str, str] = {}
    for node in placeholders:
        if node.name not in user_inputs:
            continue
        idx = user_inputs.index(node.name)
        if idx >= len(specs):
            continue
        val = node.meta.get("val")
        shape = getattr(val, "shape", None)
        if shape is None:
            continue
        for declared, dim in zip(specs[idx].dims, shape):
            if isinstance(declared, str):
                sym_name[str(dim)] = declared
    for sym, vr in ranges.items():
        name = sym_name.get(str(sym))
        if name is None:
            continue
        lo, hi = vr.lower, vr.upper
        lo_i = int(lo) if str(lo).lstrip("-").isdigit() else None
        hi_i = int(hi) if str(hi).lstrip("-").isdigit() else None
        bounds = {"min": lo_i if lo_i is not None and lo_i > 1 else None, "max": hi_i}
        if bounds["min"] is None and bounds["max"] is None:
            continue
        prev = out.get(name)
        if prev:  # one axis seen through several inputs: the tightest bounds
            bounds = {"min": max(filter(None, [prev["min"], bounds["min"]]), default=None),
                      "max": min((v for v in (prev["max"], bounds["max"]) if v is not None), default=None)}
        out[name] = bounds
    return out


def _range_warnings(assumed: dict[str, dict]) -> list[str]:
    from onnxtax.core.manifest import assumed_text

    return [f"torch.export assumed {assumed_text(name, bounds)}; the ONNX file cannot carry this range and ORT "
            f"will run outside it (recorded in the manifest; `onnxtax parity` tests {name} just outside it)"
            for name, bounds in assumed.items()]


def export_model(model: Any, output: str | Path, inputs: list[InputSpec] | list[str],
                 options: ExportOptions | None = None, *, verify_target: Callable | None = None, debug: bool = False,
                 progress: Progress | None = None, **kwargs: Any) -> ExportResult:
    """Export `model` (a spec string, a LoadedModel or an nn.Module) to `output` with the opset
    locked, declared dynamic axes kept under their names, the checker and an ORT smoke run
    passed, and a manifest beside it. `options` (ExportOptions), or its fields as keyword
    arguments. Usage errors raise OnnxtaxError; a failed check returns a result with `.error`
    set and writes nothing.

    With `target_ort` (a release series like "1.16", or an exact release), the file is made
    for that onnxruntime: the opset converted down to what it loads, the lowest IR version the
    opset allows, and a run in that release's cached virtualenv when it is there or can be
    built: `verify_target`, from onnxtax.runtimes.target_verifier(cache_dir, offline), runs it
    (passed in, so that export does not depend on the runtime matrix)."""
    from onnxtax.core.loading import check_inputs_match, resolve_model
    from onnxtax.core.memory import StageMeter, module_weights_bytes
    from onnxtax.core.ort_compat import limits_for

    opts = ExportOptions.build(options, **kwargs)
    opset, exporter, external_data = opts.opset, opts.exporter, opts.external_data
    dims, output_names, ranges = opts.dims, opts.output_names, opts.ranges
    started = time.perf_counter()
    progress = progress or silent
    output = Path(output)
    if output.suffix != ".onnx":
        raise OnnxtaxError(f"output '{output}' does not end in .onnx", "name the output like model.onnx")
    if output.exists() and output.is_dir():
        raise OnnxtaxError(f"output '{output}' is a directory", "give a file path like out/model.onnx")
    _check_output_folder(output)
    target = limits_for(opts.target_ort) if opts.target_ort else None
    specs = parse_input_specs(inputs) if inputs and isinstance(inputs[0], str) else list(inputs or [])  # type: ignore[arg-type]
    from onnxtax.core.hub.load import with_derived
    from onnxtax.core.hub.text import bind_text

    specs, derived_ranges = with_derived(model, specs, {})  # hf:/st: specs: inputs and ranges derived
    sizes = export_sizes(specs, {k: [v] for k, v in (dims or {}).items()})
    value_ranges = {**derived_ranges, **check_ranges(ranges, specs)}
    data = [(Path(f), *read_data_file(f, specs)[:2]) for f in bind_text(model, opts.data_files)]

    meter = StageMeter("export")
    progress("loading the model")
    loaded = resolve_model(model)
    loaded.module.eval()
    weights = module_weights_bytes(loaded.module)
    external_weights = external_data == "always" or (external_data == "auto" and weights > EXTERNAL_DATA_THRESHOLD)
    meter.check(weights, "export-external" if external_weights else "export")
    identity = module_identity(loaded.module)  # the user's module: what later stages check their SPEC against
    loaded = dataclasses.replace(loaded, module=check_inputs_match(loaded.module, specs, loaded.spec))

    result = ExportResult(str(output), loaded.spec, exporter, opset, target=target, source_identity=identity)
    recipe = SampleRecipe(0, value_ranges)
    result.domains = {s.name: recipe.describe(s) for s in specs}
    args = torch_inputs(specs, sizes, ranges=value_ranges)
    progress("running the model in PyTorch")
    versions = state_versions(loaded.module)
    try:
        reference = eager_outputs(loaded.module, args)
    except Exception as exc:  # noqa: BLE001
        raise InputSpecError(
            f"the model fails on inputs of the declared shapes ({', '.join(str(s) for s in specs)}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            "check --input dims and dtypes against what forward() expects; --dim sets the example sizes") from exc
    check_stateless(loaded.module, versions, reference, lambda: eager_outputs(loaded.module, args))
    if not reference:
        raise InputSpecError("the model returns no tensors", "forward() must return a tensor, or a tuple/dict of them")
    names = list(output_names) if output_names else [n for n, _ in reference]
    if output_names and len(output_names) != len(reference):
        raise InputSpecError(f"{len(output_names)} --output-name given but the model returns {len(reference)} tensors "
                             f"({', '.join(n for n, _ in reference)})", "give one --output-name per output, in order")
    if len(set(names)) != len(names):
        raise InputSpecError(f"output names are not unique: {', '.join(names)}", "give distinct --output-name values")
    clash = [n for n in names if n in {s.name for s in specs}]
    if clash:
        raise InputSpecError(f"output name {', '.join(repr(n) for n in clash)} is also an input name",
                             "an ONNX graph names every value once: give the output another --output-name")

    staging = staging_dir(output.parent)
    try:
        stage = staging.__enter__()
    except OSError as exc:
        raise OnnxtaxError(f"cannot write into the folder of '{output}': {exc.strerror or exc}",
                           "choose an output path in a folder you can write to") from exc
    try:
        _export_checked(loaded, specs, sizes, args, names, stage, output, result, opset=opset,
                        exporter=exporter, external_data=external_data, ranges=value_ranges, data=data,
                        custom_translation_table=opts.custom_translation_table, debug=debug, progress=progress,
                        verify_target=verify_target)
    except CheckFailed as exc:
        import traceback

        result.error, result.hint = exc.message, exc.hint
        result.traceback = "".join(traceback.format_exception(exc))
        result.checks.append(CheckRecord(result.stage, False, exc.message))
    finally:
        staging.__exit__(None, None, None)
    result.seconds = time.perf_counter() - started
    result.memory = meter.record()
    return result


def _check_output_folder(output: Path) -> None:
    """Before the (slow) export: the folder for OUT must exist or be creatable, and be
    writable. Nothing is created here, so a usage error leaves no empty folders behind."""
    blocked = unwritable_ancestor(output)
    if blocked is None:
        return
    existing, why = blocked
    if why == "is a file":
        raise OnnxtaxError(f"cannot create the folder for '{output}': '{existing}' is a file",
                           "choose an output path whose folders are folders")
    raise OnnxtaxError(f"cannot write '{output}': '{existing}' {why}",
                       "choose an output path in a folder you can write to")


def _export_checked(loaded, specs, sizes, args, names, stage: Path, output: Path, result: ExportResult, *,
                    opset, exporter, external_data, ranges, data, custom_translation_table, debug, progress,
                    verify_target=None) -> None:
    import torch

    scratch = stage / "exporter"
    scratch.mkdir()
    raw_path = scratch / "raw.onnx"
    input_names = [s.name for s in specs]
    result.stage = "export"
    progress(f"exporting with the {exporter} exporter (opset {opset})")
    quiet = Quiet(debug)
    program = written = eager_trials = None
    try:
        with quiet:
            if exporter == "dynamo":
                keep_torchlib_registry()
                program = torch.onnx.export(
                    loaded.module, args, dynamo=True, opset_version=opset, input_names=input_names,
                    output_names=names, dynamic_shapes=dynamic_shapes(specs, loaded.module), external_data=True,
                    custom_translation_table=custom_translation_table, optimize=True, verify=False, report=False)
                # the smoke run's eager side runs while the disk takes the weights
                eager_trials = _in_thread(size_trials, loaded.module, specs, sizes, ranges)
                written = save_program(program, raw_path)
            else:
                dynamic_axes = {s.name: {i: d for i, d in enumerate(s.dims) if isinstance(d, str)} for s in specs}
                dynamic_axes = {k: v for k, v in dynamic_axes.items() if v}
                for n in names:  # outputs: axes unknown up front; the smoke run labels them
                    dynamic_axes.setdefault(n, {})
                torch.onnx.export(loaded.module, args, str(raw_path), dynamo=False, opset_version=opset,
                                  input_names=input_names, output_names=names,
                                  dynamic_axes={k: v for k, v in dynamic_axes.items() if v})
    except Exception as exc:  # noqa: BLE001 - every exporter failure is explained, not dumped
        result.exporter_log = quiet.buffer.getvalue()
        problem, fix = explain_export_error(exc, loaded.source_file, loaded.module, specs)
        raise CheckFailed(problem, fix) from exc
    result.exporter_log = quiet.buffer.getvalue()
    if exporter == "torchscript":
        tracer = re.findall(r"TracerWarning: ([^\n]+)", result.exporter_log)
        for w in dict.fromkeys(tracer):
            result.warnings.append(f"TorchScript tracer: {w[:200]}")
    if program is not None:
        result.assumed_ranges = _assumed_ranges(program, specs)
        result.warnings.extend(_range_warnings(result.assumed_ranges))
    del program  # the exporter's in-memory model: the file now holds it

    from onnxtax.core.skeleton import read_skeleton

    # the graph without its weights: they stay in the exporter's files until written out once
    model = read_skeleton(raw_path).model
    base = scratch
    produced = default_opset(model)
    result.stage = "opset"
    target = result.target
    lock_to = min(opset, target.max_opset) if target else opset  # the target's highest opset, converted down
    progress(f"locking opset {lock_to} (exporter wrote {produced})")
    model, note = lock_opset(model, lock_to)
    unify_custom_functions(model)
    if lock_to != opset:
        note = f"{note or f'opset {lock_to}'} (--opset {opset} lowered to what onnxruntime {target.series} loads)"
    result.checks.append(CheckRecord("opset", True, note or f"opset {opset} as requested"))
    result.opset = default_opset(model)

    from onnxtax.core.providers import ort_max_ir_version

    result.stage = "ir_version"
    if target is not None:
        from onnxtax.core.ort_compat import fit_model_to_target

        result.checks.append(CheckRecord("target_ort", True, fit_model_to_target(model, target)))
    result.ir_version = model.ir_version
    max_ir = ort_max_ir_version()
    if max_ir is not None and model.ir_version > max_ir:
        raise CheckFailed(f"the model has IR version {model.ir_version}; the installed onnxruntime loads up to {max_ir}",
                          "upgrade onnxruntime, or export at a lower --opset")
    result.checks.append(CheckRecord("ir_version", True, f"IR {model.ir_version} (onnxruntime loads <= {max_ir})"))

    result.stage = "dynamic_axes"
    progress("checking dynamic axes")
    result.warnings.extend(lock_dynamic_axes(model, specs, sizes))
    result.checks.append(CheckRecord("dynamic_axes", True,
                                     ", ".join(f"{s} kept" for s in symbols_of(specs)) or "no dynamic axes declared"))

    model.producer_name = "onnxtax"
    from onnxtax.core.version import VERSION as __version__

    model.producer_version = __version__
    external = external_data == "always" or (external_data == "auto" and needs_external(model))
    staged = stage / output.name
    result.stage = "onnx.checker"
    progress("running onnx.checker (full check)")
    digests, base = save(model, base, staged, external, written)
    try:
        check_written(staged, external)
    except Exception as exc:  # noqa: BLE001 - onnx raises ValidationError / InferenceError
        raise CheckFailed(f"onnx.checker rejects the exported model: {str(exc).strip().splitlines()[0][:300]}",
                          "try another --opset or --exporter; --debug shows the exporter's log") from exc
    result.checks.append(CheckRecord("onnx.checker", True, "full check with strict shape inference"))

    custom = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    result.stage = "onnxruntime_smoke"
    progress("running in ONNX Runtime at two sizes per dynamic axis")
    try:
        details, observed, constant = smoke_run(staged, loaded.module, specs, sizes, names, progress, ranges, data,
                                                 written, eager_trials.result() if eager_trials else None)
    except CheckFailed as exc:
        if custom and "could not load" in exc.message:
            raise CheckFailed(f"{exc.message} [custom-domain ops: {', '.join(custom)}]",
                              "ONNX Runtime has no kernel for these ops: register a custom-op library, or rewrite "
                              "them with standard ops") from exc
        raise
    result.checks.append(CheckRecord("onnxruntime_smoke", True, "; ".join(details)))
    for name, why in constant.items():
        result.warnings.append(f"output '{name}' is constant in the smoke run ({why}): it was not compared, as no "
                               f"wrong value could show in it; `onnxtax parity` fails it unless --allow-constant {name}")
    if target is not None:
        result.stage = "target_runtime"
        if verify_target is None:
            detail, warning = "not run: no verifier given", (
                f"not verified in onnxruntime {target.latest}: pass verify_target=onnxtax.runtimes.matrix.target_verifier()")
        else:
            progress(f"running in onnxruntime {target.latest} (its cached virtualenv)")
            detail, warning, result.runtime_matrix = verify_target(staged, target, loaded.module, specs, sizes,
                                                                   ranges=ranges, progress=progress)
        result.checks.append(CheckRecord("target_runtime", None if warning else True, detail))
        if warning:
            result.warnings.append(warning)
    repairs = repair_output_dims(model, observed)
    if repairs:
        result.warnings.extend(repairs)
        digests, base = save(model, base, staged, external)
        check_written(staged, external)

    files = [p for p in (staged.with_name(staged.name + ".data"), staged) if p in digests]
    ins, outs = io_records(model)
    result.inputs, result.outputs = ins, outs
    result.files = [str(output.parent / p.name) for p in files]
    result.size_bytes = sum(p.stat().st_size for p in files)
    manifest = _manifest(loaded, model, specs, sizes, staged, files, exporter, opset, result, digests, names)
    result.manifest = manifest
    manifest_staged = stage / manifest_path_for(output).name
    from onnxtax.core.files import write_json_atomic

    write_json_atomic(manifest_staged, manifest)
    # data first, model next, manifest last: a reader never sees a manifest without its files
    publish([(p, output.parent / p.name) for p in files] + [(manifest_staged, manifest_path_for(output))])
    stale = output.with_name(output.name + ".data")
    if not external and stale.exists():
        stale.unlink()  # an old sidecar from a previous export would be misleading
    for signed in (signature_path_for(output), provenance_path_for(output)):
        signed.unlink(missing_ok=True)  # an earlier export's signature and provenance describe other bytes


def _manifest(loaded, model, specs, sizes, staged: Path, files: list[Path], exporter: str, opset: int,
              result: ExportResult, digests: dict[Path, str], names: list[str] | None = None) -> dict:
    from onnxtax.core.report import package_versions
    from onnxtax.core.source import source_record

    data_files = [p for p in files if p != staged]
    used_by: dict[str, list] = {}
    for s in specs:
        for axis, d in enumerate(s.dims):
            if isinstance(d, str):
                used_by.setdefault(d, []).append([s.name, axis])
    return {
        "format_version": FORMAT_VERSION,
        "created_utc": datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "model": dict(loaded.to_dict(), identity=result.source_identity),
        "source": source_record(loaded.source_file),
        "artifact": {
            "file": staged.name,
            "sha256": digests[staged],
            "size_bytes": staged.stat().st_size,
            "external_data": [{"file": p.name, "sha256": digests[p], "size_bytes": p.stat().st_size}
                              for p in data_files],
        },
        "opset": result.opset,
        "ir_version": model.ir_version,
        "exporter": {"name": exporter, "options": {"opset_version": opset, "dynamic_shapes": "Dim.DYNAMIC per "
                     "declared axis" if exporter == "dynamo" else None, "external_data": bool(data_files)},
                     "reason": EXPORTER_REASONS[exporter]},
        "versions": package_versions(),
        "inputs": [s.to_dict() for s in specs],
        "outputs": result.outputs,
        "dynamic_axes": {sym: {"export_size": size, "used_by": used_by.get(sym, [])} for sym, size in sizes.items()},
        "assumed_ranges": {k: dict(v) for k, v in result.assumed_ranges.items()},
        "domains": dict(result.domains),
        "checks": [c.to_dict() for c in result.checks],
        "warnings": list(result.warnings),
        "target_runtimes": [result.target.to_dict()] if result.target else [],
        "runtime_matrix": list(result.runtime_matrix),
        "benchmark": None,
        **({"derived": dict(loaded.hub.to_dict(), output_names=list(names or []))} if loaded.hub is not None else {}),
    }
