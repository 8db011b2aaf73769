"""The Python tax, measured: PyTorch eager vs ONNX Runtime per provider, side by side
in one run, on the same inputs and the same number of threads.

What is measured, and how (the choices a release gate depends on):

- Latency per path and batch size: every call timed alone with `time.perf_counter_ns`,
  after `warmup` untimed-for-the-report calls (they also calibrate block sizes). Inputs
  are built once, before timing. The paths are interleaved in rounds of blocks
  (A B C, then C B A, ...; 10 rounds) so that machine drift hits every path alike.
  Each path gets at least `min_time` seconds of measured calls. The garbage collector
  is off during the timed blocks.
- PyTorch eager: `module(*tensors)` with `torch.inference_mode()` entered once per block
  (the best case for eager). ONNX Runtime: `session.run_with_iobinding(binding)` with
  input and output OrtValues allocated once (call path "iobinding"); output shapes are
  learnt from one `session.run`. When outputs cannot be pre-allocated (their shape
  changes from call to call) ORT allocates them: call path "iobinding-ort-outputs".
- Harness overhead: an empty function timed through the same loop ("harness" path),
  reported, never subtracted.
- Threads: `threads=1` by default, for torch (`torch.set_num_threads`, restored
  afterwards) and ORT (`intra_op_num_threads`, `inter_op_num_threads=1`) alike: single-
  stream latency, reproducible, comparable with a one-worker-per-core server.
  `threads=None` keeps each runtime's own default (reported as it is).
- Throughput (samples/s) = batch size / mean latency: one call at a time, back to back.
- Python tax (speedup) = eager p50 / ORT p50, per batch size and provider.
- Batch axis: the dynamic axis named `batch` if an input has one, else the first dynamic
  axis of the first input that has one. Other dynamic axes take their `dims` value or
  the export size recorded in the manifest (`dynamic_axes[sym].export_size`).
- Inputs: `inputs` if given, else the manifest beside the model, else the ONNX graph.
- Cold start: fresh interpreters (`sys.executable -c`, see bench_child), interleaved
  torch / ORT, `cold_start_runs` each: time from spawn to the first result of
  "import torch + build the model from its spec + predict once" vs
  "import onnxruntime + load the .onnx + predict once", and the child's peak RSS.
- Memory: the timed ORT sessions load the file as a server does (pre-packing on); they never
  share weights with the eager model, which would turn pre-packing off and time another
  session than the deployed one. While the paths are timed the process holds the eager
  model and one session per provider (interleaving needs them all alive): two copies of the
  weights and ORT's working memory, the floor of the comparison. Then the sessions and the
  eager model (when built here from its spec) are released, before the cold-start processes,
  the sweep and the profiles load the model again. The sweep holds one session per
  optimisation level x thread count of one provider at a time (interleaved too); a profile
  holds one session at a time.
- Gates (report truthiness): `max_latency_ms={"p99": 5}` must hold for every ORT path at
  every batch size (`"p99@1"` limits one batch size); `min_speedup=X` must hold for every
  ORT path at every batch size.

The report and its JSON schema: onnxtax.bench.report.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from onnxtax.bench.cold_start import ColdStart, cold_start_paths
from onnxtax.bench.options import BenchOptions, check_gates
from onnxtax.bench.report import BatchResult, BenchReport, GateResult
from onnxtax.bench.timing import (DEVICE_OF, EAGER, HARNESS, HARNESS_TIME, ROUNDS, OrtPath, PathFailed, PathInfo, Timed,
                                  bind, measure, noop, path_failed, threaded)
from onnxtax.bench.tuning import run_profiles, run_sweep
from onnxtax.core import defaults
from onnxtax.core.artifact import Artifact, open_artifact
from onnxtax.core.errors import CheckFailed, InputSpecError
from onnxtax.core.inputs import ResolvedInputs
from onnxtax.core.progress import Progress
from onnxtax.core.specs import InputSpec, SampleRecipe, concrete_shape, make_inputs, symbols_of


# --------------------------------------------------------------------------- inputs
def batch_axis_of(specs: list[InputSpec]) -> str | None:
    """`batch` if any input names it, else the first dynamic axis of the first input with one."""
    symbols = symbols_of(specs)
    if "batch" in symbols:
        return "batch"
    for spec in specs:
        if spec.symbols:
            return spec.symbols[0]
    return None


def _fixed_sizes(specs: list[InputSpec], batch_axis: str | None, dims: dict[str, list[int]],
                 recorded: dict[str, int]) -> dict[str, int]:
    """Size of every dynamic axis except the batch axis."""
    known = symbols_of(specs)
    for name in dims:
        if name not in known:
            raise InputSpecError(f"--dim '{name}' names no dynamic axis",
                                 f"dynamic axes: {', '.join(known)}" if known else "the inputs have no dynamic axis")
    sizes: dict[str, int] = {}
    for sym in known:
        if sym == batch_axis:
            continue
        if sym in dims:
            if len(dims[sym]) != 1:
                raise InputSpecError(f"--dim {sym}= gives several values; only the batch axis "
                                     f"({batch_axis}) is swept", f"e.g. --dim {sym}={dims[sym][0]}")
            sizes[sym] = dims[sym][0]
        elif sym in recorded:
            sizes[sym] = recorded[sym]
        else:
            raise InputSpecError(f"no size for dynamic axis '{sym}'",
                                 f"give one with --dim {sym}=N (the manifest records none)")
    return sizes


def data_rows(files: list, specs: list[InputSpec]) -> tuple[dict | None, dict[str, int]]:
    """The rows of the data files (one .npz or tokenized text file each), joined on axis 0, and the
    size they give each dynamic axis but the first input's first (the batch); (None, {}) without
    files. Those sizes must agree across files."""
    import numpy as np

    from onnxtax.core.specs import read_data_file

    if not files:
        return None, {}
    parts = [read_data_file(f, specs)[:2] for f in files]
    first_sizes = parts[0][1]
    batch = batch_axis_of(specs)
    for f, (_, sizes) in zip(files[1:], parts[1:]):
        other = {k: v for k, v in sizes.items() if k != batch and first_sizes.get(k) != v}
        if other:
            raise InputSpecError(f"data file {f} has {', '.join(f'{k}={v}' for k, v in other.items())}, "
                                 f"{files[0]} has {', '.join(f'{k}={first_sizes.get(k)}' for k in other)}",
                                 "bench times one input shape: give data files whose rows have the same sizes")
    rows = {s.name: np.concatenate([p[0][s.name] for p in parts]) for s in specs}
    return rows, {k: v for k, v in first_sizes.items() if k != batch}


def _refuse_bfloat16(specs: list[InputSpec]) -> None:
    for spec in specs:
        if spec.dtype == "bfloat16":
            raise InputSpecError(f"input '{spec.name}' is bfloat16, which numpy cannot hold for ONNX Runtime",
                                 "benchmark a float32 or float16 export")


# --------------------------------------------------------------------------- main
def _eager_model(model) -> tuple[Any, str | None, str | None, str | None]:
    """(nn.Module or None, spec string or None, class name, why cold start cannot rebuild it)."""
    if model is None:
        return None, None, None, "no PyTorch model given"
    from onnxtax.core.loading import resolve_model

    loaded = resolve_model(model)
    if not loaded.in_memory:
        return loaded.module, loaded.spec, loaded.class_name, None
    loaded.module.eval()
    return loaded.module, None, loaded.class_name, ("the model was given as an in-memory nn.Module: a fresh "
                                                    "process can only rebuild it from a SPEC string")


def run_bench(model, onnx_path: str | Path | Artifact,
              inputs: list[InputSpec] | list[str] | ResolvedInputs | None = None, options: BenchOptions | None = None,
              *, progress: Progress | None = None, **kwargs: Any) -> BenchReport:
    """Benchmark `model` (SPEC string, LoadedModel, nn.Module, or None for ORT only) against
    `onnx_path` (or an opened Artifact) on each provider; `options` (BenchOptions) or its fields as
    keyword arguments. See the module docstring for what is measured."""
    from onnxtax.core.inputs import resolve_inputs
    from onnxtax.core.memory import StageMeter
    from onnxtax.core.providers import open_session, placement_of, resolve_providers
    from onnxtax.core.report import host_facts

    started = time.monotonic()
    opts = BenchOptions.build(options, **kwargs)
    batch_sizes, dims, providers, skip_unavailable = opts.batch_sizes, opts.dims, opts.providers, opts.skip_unavailable
    threads, opt_level, warmup, min_time = opts.threads, opts.opt_level, opts.warmup, opts.min_time
    cold_start, cold_start_runs, sweep, profile_dir = opts.cold_start, opts.cold_start_runs, opts.sweep, opts.profile_dir
    max_latency_ms, min_speedup, ranges, seed = opts.max_latency_ms, opts.min_speedup, opts.ranges, opts.seed
    dims_lists = {k: (list(v) if isinstance(v, (list, tuple)) else [int(v)]) for k, v in (dims or {}).items()}

    meter = StageMeter("bench")
    artifact = open_artifact(onnx_path)
    onnx_path = artifact.path
    resolved = resolve_inputs(artifact, inputs, ranges=ranges)
    specs, ranges = resolved.specs, resolved.ranges
    _refuse_bfloat16(specs)
    from onnxtax.core.hub.text import bind_text

    real_rows, real_sizes = data_rows(bind_text(model, opts.data_files), specs)
    meter.check(artifact.weights_bytes, extra_factor=0.0 if model is not None else -1.0)  # no eager copy
    batch_axis = batch_axis_of(specs)
    if batch_axis is None:
        if batch_sizes:
            raise InputSpecError("the model has no dynamic axis, so --batch-sizes cannot vary the batch",
                                 "drop --batch-sizes, or export with a dynamic batch axis")
        first = specs[0].dims[0] if specs and specs[0].dims else 1
        sizes_list = [int(first) if isinstance(first, int) else 1]
    elif batch_axis in dims_lists:
        if batch_sizes:
            raise InputSpecError(f"the batch axis '{batch_axis}' is given by both --batch-sizes and --dim",
                                 "use one of them")
        sizes_list = list(dict.fromkeys(dims_lists.pop(batch_axis)))
    else:
        sizes_list = list(dict.fromkeys(int(b) for b in (batch_sizes or defaults.BENCH_BATCH_SIZES)))
    if any(b < 1 for b in sizes_list):
        raise InputSpecError(f"batch sizes {sizes_list} must be positive", "e.g. --batch-sizes 1,8,64")
    for sym, size in real_sizes.items():
        if sym != batch_axis and sym in dims_lists and dims_lists[sym] != [size]:
            raise InputSpecError(f"--dim {sym}={','.join(map(str, dims_lists[sym]))}: the data's rows have {sym}={size}",
                                 f"drop --dim {sym}, or give data of that size")
    fixed = _fixed_sizes(specs, batch_axis, dims_lists, {**resolved.export_sizes, **real_sizes})

    usable, skipped = resolve_providers(list(providers) if providers else None, skip_unavailable=skip_unavailable)
    if not usable:
        raise InputSpecError("no execution provider left to benchmark",
                             "drop --skip-unavailable or name a provider this host has")
    gates = check_gates(max_latency_ms, min_speedup, sizes_list, model is not None)

    module, spec, class_name, cold_reason = _eager_model(model)
    if module is not None:
        from onnxtax.core.identity import check_model_matches
        from onnxtax.core.loading import check_inputs_match

        check_model_matches(module, artifact.manifest, onnx_path.name, spec or class_name or "the model")
        module = check_inputs_match(module, specs, spec or class_name or "the model")

    n_steps = ((cold_start_runs * (len(usable) + (1 if spec else 0))) if cold_start else 0) + len(sizes_list)
    if sweep:
        n_steps += len(usable) * len(sizes_list)
    if profile_dir is not None:
        n_steps += len(usable) * len(sizes_list)
    steps = [0]

    def tick(what: str) -> None:
        if progress:
            progress(what, steps[0], n_steps)
        steps[0] += 1

    # sessions first: a provider that cannot load the model is recorded before any timing
    ort_paths: list[OrtPath] = []
    not_loaded: list[PathInfo] = []
    for req in usable:
        pinfo = PathInfo(f"ort:{req.label}", "onnxruntime", "iobinding", req.name,
                         dict(threaded(req, threads).options), threads, opt_level, DEVICE_OF.get(req.name, "cpu"))
        try:
            session = open_session(onnx_path, threaded(req, threads), opt_level=opt_level, threads=threads)
        except CheckFailed as exc:
            pinfo.status, pinfo.reason = "error", exc.message
            not_loaded.append(pinfo)
            continue
        placement = placement_of(session, req.name)
        pinfo.placement = {"method": placement.method, "total_nodes": placement.total_nodes,
                           "on_provider": placement.on_provider, "fallback": placement.fallback_count,
                           "fallback_op_types": dict(placement.fallback_op_types)}
        ort_paths.append(OrtPath(pinfo, session, req))

    recipe = SampleRecipe(seed, ranges)
    torch = None
    torch_threads_before = None
    if module is not None:
        import torch

        torch_threads_before = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
    paths: list[PathInfo] = []
    if module is not None:
        paths.append(PathInfo(EAGER, "torch-eager", "inference_mode", None, {},
                              torch.get_num_threads(), None, "cpu", None))
    paths += [p.info for p in ort_paths] + not_loaded
    by_id = {p.id: p for p in paths}

    def fail(path_id: str, bs: int, exc: BaseException) -> None:
        info = by_id[path_id]
        info.status, info.reason = "failed", path_failed(path_id, bs, exc).message

    batches: list[BatchResult] = []
    try:
        for bs in sizes_list:
            tick(f"batch {bs}")
            sizes = dict(fixed, **({batch_axis: bs} if batch_axis else {}))
            arrays = make_inputs(specs, sizes, recipe) if real_rows is None else {
                k: v[[i % len(v) for i in range(bs)]] for k, v in real_rows.items()}
            feeds = resolved.feeds(arrays)
            timed: list[Timed] = [Timed(HARNESS, noop, (None,), min(min_time, HARNESS_TIME))]
            call_path: dict[str, str] = {}
            keep_alive = []
            if module is not None and by_id[EAGER].status == "measured":
                from onnxtax.core.inputs import torch_tensors

                from onnxtax.core.identity import check_outputs_match, check_stateless, state_versions
                from onnxtax.core.inputs import flatten_outputs

                tensors = torch_tensors(specs, arrays)
                versions = state_versions(module)
                try:
                    with torch.inference_mode():
                        outputs = flatten_outputs(module(*tensors))
                    timed.append(Timed(EAGER, module, tensors, min_time, context=torch.inference_mode))
                except Exception as exc:  # noqa: BLE001 - the user's forward()
                    # the inputs do not fit the model: a usage error, as in parity (exit 2), not a measurement
                    from onnxtax.core.reference import inputs_hint

                    shapes = ", ".join(f"{s.name}{list(arrays[s.name].shape)}" for s in specs)
                    raise InputSpecError(f"the source model raised {type(exc).__name__}: {str(exc).strip()[:300]} "
                                         f"at batch {bs} ({shapes})", inputs_hint(specs, ranges)) from exc
                def again(module=module, tensors=tensors):
                    with torch.inference_mode():
                        return flatten_outputs(module(*tensors))


                check_stateless(module, versions, outputs, again)  # a model keeping state is timed for nothing
                check_outputs_match(len(outputs), artifact.output_names, onnx_path.name, spec or class_name or "")
                del again, outputs  # nothing here may keep the eager model alive once it is released
            for p in ort_paths:
                if p.info.status != "measured":
                    continue
                try:
                    fn, args, call, keep = bind(p.session, feeds, p.info.device)
                except Exception as exc:  # noqa: BLE001 - ORT's pybind errors
                    fail(p.info.id, bs, exc)
                    continue
                keep_alive.append(keep)
                call_path[p.info.id] = call
                if call != "iobinding":
                    p.info.call = call
                timed.append(Timed(p.info.id, fn, args, min_time))
            while len(timed) > 1:
                try:
                    latency = measure(timed, warmup)
                except PathFailed as failed:  # a call that worked once failed while timed: measure the rest
                    fail(failed.path, bs, failed.exc)
                    timed = [Timed(t.path, t.fn, t.args, t.target_ns / 1e9, t.context) for t in timed
                             if t.path != failed.path]
                    continue
                batches.append(BatchResult(bs, {s.name: list(concrete_shape(s, sizes)) for s in specs},
                                           {t.path: latency[t.path] for t in timed},
                                           {k: v for k, v in call_path.items() if k in latency}))
                break
            del keep_alive
    finally:
        if torch is not None and torch_threads_before is not None:
            torch.set_num_threads(torch_threads_before)
    torch_threads = paths[0].threads if module is not None else None
    # Every path is timed: the eager model (when built here from its spec) and the sessions are
    # released before anything loads the model again, so the cold-start processes, the sweep's and
    # the profiles' sessions do not run beside them (each would be one more copy of the weights).
    for p in ort_paths:
        p.session = None
    module = session = timed = fn = args = keep = tensors = None  # noqa: F841 - the last references to them

    cold: dict[str, ColdStart] = {}
    cold_start_reason = None if cold_start else "not requested (--no-cold-start)"
    if cold_start:
        first_sizes = dict(fixed, **({batch_axis: sizes_list[0]} if batch_axis else {}))
        cold = cold_start_paths(spec, cold_reason, onnx_path, ort_paths, specs, first_sizes, ranges, threads,
                           opt_level, cold_start_runs, tick)

    measured = [p for p in ort_paths if p.info.status == "measured"]
    sweep_result = None
    if sweep:
        sweep_result = run_sweep(onnx_path, [p.request for p in measured], resolved, fixed, batch_axis,
                                  sizes_list, recipe, threads, opt_level, warmup, min_time, tick)

    profiles = None
    if profile_dir is not None:
        profiles = run_profiles(Path(profile_dir), onnx_path, measured, resolved, fixed, batch_axis, sizes_list,
                                 recipe, threads, opt_level, warmup, tick)

    settings = {"batch_axis": batch_axis, "batch_sizes": sizes_list, "dims": fixed, "threads": threads,
                "torch_threads": torch_threads, "opt_level": opt_level,
                "warmup": warmup, "min_time_s": min_time, "rounds": ROUNDS, "timer": "time.perf_counter_ns",
                "gc_disabled": True, "interleaved": "ABBA blocks per batch size", "seed": seed,
                "data": [str(f) for f in opts.data_files] or None}
    report = BenchReport(str(onnx_path), spec, class_name, specs, resolved.source, settings, paths,
                         [r.label for r in skipped], batches, cold, cold_start_reason,
                         cold_start_runs if cold_start else 0, sweep_result, profiles)
    report.gates = _evaluate_gates(report, gates, min_speedup)
    report.host = host_facts()
    report.duration_s = time.monotonic() - started
    report.memory = meter.record()
    if progress:
        progress("done", n_steps, n_steps)
    return report


def _evaluate_gates(report: BenchReport, latency_gates: dict[str, float], min_speedup: float | None
                    ) -> list[GateResult]:
    out: list[GateResult] = []
    for key, limit in latency_gates.items():
        pct, _, only = key.partition("@")
        for b in report.batches:
            if only and b.batch_size != int(only):
                continue
            for path in b.ort_paths:
                value = b.latency[path].get(pct)
                out.append(GateResult("max_latency_ms", key, path, b.batch_size, limit, value, value <= limit))
    if min_speedup is not None:
        for b in report.batches:
            for path in b.ort_paths:
                value = b.speedup(path)
                if value is None:  # eager failed at this batch size: a failure of its own, no speedup
                    continue
                out.append(GateResult("min_speedup", "eager/ort p50", path, b.batch_size, float(min_speedup),
                                      value, value >= min_speedup))
    return out


# --------------------------------------------------------------------------- plot
