"""`onnxtax export`: write exactly the model that was asked for, or nothing.

torch.onnx reports success while writing something else than asked: another opset
(the dynamo exporter keeps opset 18 when down-conversion fails), dynamic axes renamed
or silently made static, batch sizes baked inside the graph, a sidecar `.onnx.data`.
Every one of those is checked here after the exporter ran, and only a model that
passed every check is renamed into place, together with its manifest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import re
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from onnxtax.core import defaults
from onnxtax.core.errors import CheckFailed, InputSpecError, OnnxtaxError
from onnxtax.export.errors import _explain_export_error
from onnxtax.export.graph import (_default_opset, _io_records, _lock_dynamic_axes, _lock_opset, _repair_output_dims,
                                 _unify_custom_functions)
from onnxtax.core.files import publish, staging_dir, unwritable_ancestor
from onnxtax.core.manifest import FORMAT_VERSION, manifest_path_for
from onnxtax.core.progress import Progress, silent
from onnxtax.core.report import Verdict
from onnxtax.core.inputs import check_ranges, dynamic_shapes, flatten_outputs, torch_tensors
from onnxtax.core.specs import (InputSpec, SampleRecipe, ValueRange, export_sizes, make_inputs, parse_input_specs,
                           read_data_file, symbols_of)

EXPORTERS = ("dynamo", "torchscript")
EXTERNAL_DATA_MODES = ("auto", "always", "never")
EXPORTER_REASONS = {
    "dynamo": "default: torch.export-based exporter, the one torch maintains; keeps data-dependent "
              "branches out (fails loudly) instead of freezing them",
    "torchscript": "requested: TorchScript tracing exporter (legacy; freezes Python branches and can bake sizes, "
                   "onnxtax checks for both)",
}
# Above this the protobuf cannot be serialised in one piece (2 GiB), so weights go to a sidecar.
EXTERNAL_DATA_THRESHOLD = 2_000_000_000
# The smoke run compares ORT with eager with parity's criterion (onnxtax.core.compare: atol scaled
# by the output's RMS, cosine gate), 10x looser: it is a shape-level gate that also catches
# gross numeric breakage (a frozen branch, a specialised size), on one sample per size.
# `onnxtax parity` is the precise numeric gate.
SMOKE_RTOL = 1e-3
SMOKE_ATOL = 1e-4



@dataclass
class CheckRecord:
    name: str
    passed: bool | None  # None: did not run
    detail: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass
class ExportResult(Verdict):
    """What `export_model` did. Truthy when the model was written."""

    output: str
    spec: str
    exporter: str
    requested_opset: int
    opset: int | None = None
    ir_version: int | None = None
    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    checks: list[CheckRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    hint: str | None = None
    files: list[str] = field(default_factory=list)
    size_bytes: int = 0
    seconds: float = 0.0
    manifest: dict | None = None
    exporter_log: str = ""
    assumed_ranges: dict[str, dict] = field(default_factory=dict)  # axis -> {"min", "max"} torch.export assumed
    domains: dict[str, str] = field(default_factory=dict)  # input -> how the smoke run drew its values
    stage: str = "load"  # the check under way; named in the failure record
    traceback: str = ""  # the failure's full traceback, for --debug (not in to_dict)
    target: Any = None  # ort_compat.OrtLimits of --target-ort
    runtime_matrix: list[dict] = field(default_factory=list)  # releases x providers it was verified on
    memory: Any = None  # onnxtax.core.memory.MemoryRecord

    @property
    def passed(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return {
            "passed": self.passed, "output": self.output, "spec": self.spec, "exporter": self.exporter,
            "requested_opset": self.requested_opset, "opset": self.opset, "ir_version": self.ir_version,
            "inputs": self.inputs, "outputs": self.outputs, "checks": [c.to_dict() for c in self.checks],
            "warnings": self.warnings, "error": self.error, "hint": self.hint, "files": self.files,
            "size_bytes": self.size_bytes, "seconds": round(self.seconds, 3),
            "assumed_ranges": {k: dict(v) for k, v in self.assumed_ranges.items()}, "domains": dict(self.domains),
            "target_ort": self.target.to_dict() if self.target else None, "runtime_matrix": self.runtime_matrix,
            "manifest": str(manifest_path_for(self.output)) if self.passed else None,
            "memory": self.memory.to_dict() if self.memory else None,
        }


class _Quiet:
    """Capture what torch.onnx prints and logs (dozens of lines a run) unless debugging."""

    LOGGERS = ("torch", "onnxscript", "onnx_ir", "torch.onnx", "torch.fx", "torch._export", "torch.export")

    def __init__(self, debug: bool):
        self.debug = debug
        self.buffer = io.StringIO()
        self._stack = contextlib.ExitStack()
        self._levels: dict[str, int] = {}

    def __enter__(self):
        if self.debug:
            return self
        self._stack.enter_context(_capture_fds(self.buffer))
        self._stack.enter_context(contextlib.redirect_stdout(self.buffer))
        self._stack.enter_context(contextlib.redirect_stderr(self.buffer))
        self._stack.enter_context(warnings.catch_warnings(record=True))
        warnings.simplefilter("always")
        for name in self.LOGGERS:
            lg = logging.getLogger(name)
            self._levels[name] = lg.level
            lg.setLevel(logging.CRITICAL)
        return self

    def __exit__(self, *exc):
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
        self._stack.close()
        return False


@contextlib.contextmanager
def _capture_fds(buffer: io.StringIO):
    """The TorchScript exporter and ORT print from C++ straight to fds 1 and 2."""
    import os
    import sys
    import tempfile

    fds = [1, 2]  # the process's own descriptors, whatever sys.stdout currently wraps
    with tempfile.TemporaryFile(mode="w+b") as sink:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        saved = [os.dup(fd) for fd in fds]
        try:
            for fd in fds:
                os.dup2(sink.fileno(), fd)
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except ValueError:
                    pass
            for fd, old in zip(fds, saved):
                os.dup2(old, fd)
                os.close(old)
            sink.seek(0)
            buffer.write(sink.read().decode("utf-8", errors="replace"))


def _torch_inputs(specs: list[InputSpec], sizes: dict[str, int], seed: int = 0,
                  ranges: dict[str, ValueRange] | None = None, arrays: dict | None = None) -> tuple:
    if arrays is None:
        arrays = make_inputs(specs, sizes, SampleRecipe(seed=seed, ranges=dict(ranges or {})))
    return torch_tensors(specs, arrays)


def _eager(model, args: tuple) -> list[tuple[str, Any]]:
    import torch

    with torch.inference_mode():
        return flatten_outputs(model(*args))


def _smoke_candidates(sizes: dict[str, int]) -> list[dict[str, list[int]]]:
    """Two trials, each with the sizes to try per dynamic axis, in order of preference:
    1 first (the online-serving batch, where 0/1 specialisation bites), then 2*size+1;
    the later candidates serve models that reject those sizes (a kernel longer than 1,
    an even length). The export-time size itself is never a candidate."""
    if not sizes:
        return [{}]
    small = {s: [1, 2, v + 1, v + 2] for s, v in sizes.items()}
    large = {s: [2 * v + 1, 2 * v, 2 * v + 2, 3 * v, 4 * v + 1] for s, v in sizes.items()}
    return [{s: [c for c in dict.fromkeys(cands) if c != sizes[s]] for s, cands in trial.items()}
            for trial in (small, large)]


def _eager_at(model, specs: list[InputSpec], trial: dict[str, int], ranges: dict[str, ValueRange]):
    """(inputs, eager outputs) at these sizes, or None when the model itself rejects them."""
    args = _torch_inputs(specs, trial, seed=1, ranges=ranges)
    try:
        return args, _eager(model, args)
    except Exception:  # noqa: BLE001 - any error from the user's forward() at this size
        return None


def _pick_trial(model, specs: list[InputSpec], sizes: dict[str, int], candidates: dict[str, list[int]],
                taken: dict[str, int], ranges: dict[str, ValueRange]):
    """Sizes at which eager PyTorch runs: every axis at its first candidate when the model
    accepts that; else axis by axis from the export-time sizes (known to run), each axis
    taking its first candidate the model accepts. `taken` holds the sizes the previous
    trial used, so that each axis runs at two different values.
    Returns (sizes, notes, inputs, eager outputs)."""
    options = {s: [c for c in cands if c != taken.get(s)] for s, cands in candidates.items()}
    first = {s: opts[0] for s, opts in options.items()}
    ran = _eager_at(model, specs, first, ranges)
    if ran is not None:
        return first, [], *ran
    trial = dict(sizes)
    for sym, opts in options.items():
        for value in opts:
            if _eager_at(model, specs, {**trial, sym: value}, ranges) is not None:
                trial[sym] = value
                break
    notes = [f"{sym}={value} fails in PyTorch itself" for sym, value in first.items() if trial[sym] != value]
    ran = _eager_at(model, specs, trial, ranges)
    if ran is None:  # axes that run one at a time but not together: the export sizes run
        trial, ran = dict(sizes), _eager_at(model, specs, sizes, ranges)
        notes = [f"{', '.join(f'{k}={v}' for k, v in first.items())} fails in PyTorch itself"]
    assert ran is not None, "the export-time sizes ran before export"
    return trial, notes, *ran


def _compare_smoke(ref, got) -> str | None:
    """Parity's criterion (onnxtax.core.compare), at the smoke run's looser tolerance."""
    from onnxtax.core.compare import compare_arrays

    exact = ref.dtype.kind not in "fc"
    stats = compare_arrays(got, ref, 0.0 if exact else SMOKE_RTOL, 0.0 if exact else SMOKE_ATOL)
    if stats:
        return None
    if stats.problems:
        if any(p.startswith("shape") for p in stats.problems):
            return f"shape {tuple(got.shape)} from ONNX Runtime, {tuple(ref.shape)} from PyTorch"
        return "; ".join(stats.problems)
    if exact:
        return "integer outputs differ"
    if stats.nan_inf_mismatch:
        return "NaN/Inf in different positions"
    if stats.outside:
        return (f"values differ from PyTorch (max abs diff {stats.max_abs_diff:.3g}, {stats.outside} of "
                f"{stats.elements} elements outside {stats.atol_effective:.3g} + {SMOKE_RTOL:g}*|b|, output rms "
                f"{stats.scale:.3g})")
    return f"values differ from PyTorch (cosine similarity {stats.cosine_min:.4g})"


def _size_trials(model, specs: list[InputSpec], sizes: dict[str, int], ranges: dict[str, ValueRange]) -> list[tuple]:
    """The smoke run's eager side: (label, sizes, notes, inputs, eager outputs) at two values of
    every dynamic axis. Export computes it in a thread while the weights are being written
    (the disk is then the bottleneck, not the CPU)."""
    out, taken = [], {}
    for candidates in _smoke_candidates(sizes):
        trial, notes, args, ref = _pick_trial(model, specs, sizes, candidates, taken, ranges)
        taken = dict(trial)
        out.append((", ".join(f"{k}={v}" for k, v in trial.items()) or "static shapes", trial, notes, args, ref))
    return out


def _smoke_run(path: Path, model, specs: list[InputSpec], sizes: dict[str, int], output_names: list[str],
               progress: Progress, ranges: dict[str, ValueRange] | None = None, data: list | None = None,
               written: Any = None, size_trials: list[tuple] | None = None) -> tuple[list[str], dict, dict[str, str]]:
    """Load in a real ORT CPU session and run at two values of every dynamic axis (`size_trials`,
    computed here when not given), and on each --data file, comparing shapes and values with
    eager PyTorch at the same inputs (parity's criterion, looser).
    Returns (details, observed output shapes, constant outputs -> why)."""
    import numpy as np

    from onnxtax.core.compare import Constancy
    from onnxtax.core.providers import open_session, ort_error_summary
    from onnxtax.core.weights import share_weights

    ranges = ranges or {}
    # the weights the module holds are the ones just written (compared byte for byte): ORT uses
    # them in place instead of loading a second copy of the file
    try:
        shared = share_weights(path, model, written)
    except (OSError, ValueError):  # a proto the wire walker cannot read: load the file
        shared = None
    session = (shared.open(record_placement=False) if shared is not None and shared.names
               else open_session(path, record_placement=False))
    ort_inputs = [i.name for i in session.get_inputs()]
    details: list[str] = []
    observed: dict[str, list] = {}
    constancy = {name: Constancy() for name in output_names}
    seen: dict[str, set[int]] = {s: set() for s in sizes}

    def trials():
        for label, trial, notes, args, ref in size_trials or _size_trials(model, specs, sizes, ranges):
            for sym, value in trial.items():
                seen[sym].add(value)
            yield label, trial, notes, args, ref
        for file, arrays, file_sizes in data or []:
            args = _torch_inputs(specs, file_sizes, arrays=arrays)
            try:
                ref = _eager(model, args)
            except Exception as exc:  # noqa: BLE001 - the user's forward() on the user's data
                raise InputSpecError(f"--data {file}: the model raises {type(exc).__name__}: "
                                     f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
                                     "fix the file, or check it with the model in Python first") from exc
            yield f"{file.name}", file_sizes, [], args, ref

    for label, trial, notes, args, ref in trials():
        progress(f"running ONNX Runtime at {label}")
        feeds = {}
        for name, spec, t in zip(ort_inputs, specs, args):
            arr = t.float().numpy() if spec.dtype == "bfloat16" else t.numpy()
            feeds[name] = arr
        try:
            got = session.run(None, feeds)
        except Exception as exc:  # noqa: BLE001 - ORT's own exception types
            line, node = ort_error_summary(exc)
            raise CheckFailed(
                f"ONNX Runtime fails at {label}: {line}" + (f" (node {node})" if node else ""),
                "a size from export time is baked into the graph: look for int(x.shape[i]), .item(), "
                "or Python loops over sizes in forward(); the dynamo exporter (--exporter dynamo) keeps "
                "more of them symbolic") from exc
        if len(got) != len(ref):
            raise CheckFailed(f"ONNX Runtime returns {len(got)} outputs, PyTorch {len(ref)}",
                              "check the model's output structure")
        for name, (_, ref_t), arr in zip(output_names, ref, got):
            ref_np = ref_t.float().numpy() if str(ref_t.dtype) == "torch.bfloat16" else ref_t.numpy()
            problem = _compare_smoke(ref_np, np.asarray(arr))
            if problem:
                raise CheckFailed(
                    f"output '{name}' at {label}: {problem}",
                    "the graph does not compute what the model computes at this size (a frozen branch or a "
                    "specialised size): run `onnxtax lint-ops --source` and `onnxtax parity` for details; if an "
                    "input's values are outside the model's domain, declare it with --range NAME=LOW:HIGH or --data")
            constancy[name].add(label, ref_np)
            observed.setdefault(name, []).append((trial, tuple(np.asarray(arr).shape)))
        details.append(f"{label}: ok" + (f" ({'; '.join(notes)})" if notes else ""))
    stuck = [sym for sym, values in seen.items() if values <= {sizes[sym]}]
    if stuck:
        raise InputSpecError(
            f"dynamic axis {', '.join(repr(s) for s in stuck)} could not be run at any size but the export-time "
            f"one ({', '.join(f'{s}={sizes[s]}' for s in stuck)}): PyTorch itself fails at every other size tried",
            "declare the axis static in --input, or set an example size the model accepts with --dim")
    constant = {name: c.describe() for name, c in constancy.items() if c.constant}
    return details, observed, constant


def _in_thread(fn, *args):
    """fn(*args) started in a thread; `.result()` waits for it and raises what it raised."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxtax-export")
    future = pool.submit(fn, *args)
    pool.shutdown(wait=False)
    return future


def _save_program(program, path: Path):
    """The exporter's model to `path` with its weights in `PATH.data`, each written once from
    its own memory and checksummed on the way (ONNXProgram.save copies every tensor first)."""
    import onnx_ir as ir

    from onnxtax.core.weights import write_exported_weights

    written = write_exported_weights(program.model, path.with_name(path.name + ".data"))
    ir.save(program.model, path)  # the graph alone: every large tensor is now a reference
    return written


def _save(model, base: Path, path: Path, external: bool, written=None) -> tuple[dict[Path, str], Path]:
    """Write the model (its weights streamed from the files under `base`, checksums taken while
    writing); returns ({file: sha256}, the folder its weight references are now relative to)."""
    from onnxtax.core.weights import write_model

    digests, base = write_model(model, base, path, external=external, written=written)
    data = path.with_name(path.name + ".data")
    if data in digests:
        if data.stat().st_size == 0:
            data.unlink()  # no empty sidecars
            del digests[data]
        else:
            # the exporter creates the sidecar owner-only (0600): a server running as another user
            # could load the model but not its weights. Same permissions as the model file.
            data.chmod(path.stat().st_mode & 0o777)
    return digests, base


def _check_written(path: Path, external: bool) -> None:
    """onnx.checker's full check (strict shape inference) of the written file, without holding
    its weights: by path when they are external data (the checker then also checks that the
    data files are there, inside the model's folder); else on the graph read without them
    (by path, the checker would parse every weight inside the .onnx into memory): that graph,
    whose large tensors refer to their bytes inside the .onnx, is checked by path from a
    file beside it."""
    import onnx

    from onnxtax.core.weights import read_skeleton

    if external:
        onnx.checker.check_model(str(path), full_check=True)
        return
    graph_only = path.with_name(path.stem + ".graph-only.onnx")
    graph_only.write_bytes(read_skeleton(path).model.SerializeToString())
    try:
        onnx.checker.check_model(str(graph_only), full_check=True)
    finally:
        graph_only.unlink()


def _needs_external(model) -> bool:
    from onnxtax.core.weights import data_bytes

    try:
        return data_bytes(model) > EXTERNAL_DATA_THRESHOLD
    except Exception:  # noqa: BLE001 - protobuf refuses to size > 2 GiB messages on some builds
        return True


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


def export_model(
    model: Any,
    output: str | Path,
    inputs: list[InputSpec] | list[str],
    *,
    opset: int = defaults.OPSET,
    exporter: str = defaults.EXPORTER,
    dims: dict[str, int] | None = None,
    output_names: list[str] | None = None,
    external_data: str = defaults.EXTERNAL_DATA,
    custom_translation_table: dict | None = None,
    ranges: dict[str, ValueRange | tuple[float, float]] | None = None,
    data_files: list[str | Path] | None = None,
    target_ort: str | None = None,
    verify_target: Callable | None = None,
    debug: bool = False,
    progress: Progress | None = None,
) -> ExportResult:
    """Export `model` (a spec string or an nn.Module) to `output` with the opset locked,
    declared dynamic axes kept under their names, the checker and an ORT smoke run passed,
    and a manifest beside it. Usage errors raise OnnxtaxError; a failed check returns
    a result with `.error` set and writes nothing. `ranges` and `data_files` declare the inputs'
    value domains for the example input and the smoke run, as in `check_parity`.

    With `target_ort` (a release series like "1.16", or an exact release), the file is made
    for that onnxruntime: the opset converted down to what it loads, the lowest IR version the
    opset allows, and a run in that release's cached virtualenv (onnxtax.runtimes.matrix) when it is
    there or can be built: `verify_target`, from onnxtax.runtimes.matrix.target_verifier(cache_dir,
    offline), runs it (passed in, so that export does not depend on the runtime matrix)."""
    from onnxtax.core.loading import check_inputs_match, resolve_model
    from onnxtax.core.memory import StageMeter, module_weights_bytes
    from onnxtax.core.ort_compat import limits_for

    started = time.perf_counter()
    progress = progress or silent
    if exporter not in EXPORTERS:
        raise OnnxtaxError(f"unknown exporter '{exporter}'", f"use one of: {', '.join(EXPORTERS)}")
    if external_data not in EXTERNAL_DATA_MODES:
        raise OnnxtaxError(f"unknown --external-data '{external_data}'", f"use one of: {', '.join(EXTERNAL_DATA_MODES)}")
    if not defaults.MIN_OPSET <= opset <= defaults.MAX_OPSET:
        raise OnnxtaxError(f"opset {opset} is out of range",
                           f"use an opset between {defaults.MIN_OPSET} and {defaults.MAX_OPSET}; 17-20 are typical")
    output = Path(output)
    if output.suffix != ".onnx":
        raise OnnxtaxError(f"output '{output}' does not end in .onnx", "name the output like model.onnx")
    if output.exists() and output.is_dir():
        raise OnnxtaxError(f"output '{output}' is a directory", "give a file path like out/model.onnx")
    _check_output_folder(output)
    target = limits_for(target_ort) if target_ort else None  # an unknown release is exit 2 before the export
    specs = parse_input_specs(inputs) if inputs and isinstance(inputs[0], str) else list(inputs)  # type: ignore[arg-type]
    sizes = export_sizes(specs, {k: [v] for k, v in (dims or {}).items()})
    value_ranges = check_ranges(ranges, specs)
    data = [(Path(f), *read_data_file(f, specs)[:2]) for f in data_files or []]

    meter = StageMeter("export")
    progress("loading the model")
    loaded = resolve_model(model)
    loaded.module.eval()
    weights = module_weights_bytes(loaded.module)
    external_weights = external_data == "always" or (external_data == "auto" and weights > EXTERNAL_DATA_THRESHOLD)
    meter.check(weights, "export-external" if external_weights else "export")
    loaded = dataclasses.replace(loaded, module=check_inputs_match(loaded.module, specs, loaded.spec))

    result = ExportResult(str(output), loaded.spec, exporter, opset, target=target)
    recipe = SampleRecipe(0, value_ranges)
    result.domains = {s.name: recipe.describe(s) for s in specs}
    args = _torch_inputs(specs, sizes, ranges=value_ranges)
    progress("running the model in PyTorch")
    try:
        reference = _eager(loaded.module, args)
    except Exception as exc:  # noqa: BLE001
        raise InputSpecError(
            f"the model fails on inputs of the declared shapes ({', '.join(str(s) for s in specs)}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            "check --input dims and dtypes against what forward() expects; --dim sets the example sizes") from exc
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
                        custom_translation_table=custom_translation_table, debug=debug, progress=progress,
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
    raise OnnxtaxError(f"cannot write into '{existing}' (permission denied)",
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
    quiet = _Quiet(debug)
    program = written = eager_trials = None
    try:
        with quiet:
            if exporter == "dynamo":
                program = torch.onnx.export(
                    loaded.module, args, dynamo=True, opset_version=opset, input_names=input_names,
                    output_names=names, dynamic_shapes=dynamic_shapes(specs, loaded.module), external_data=True,
                    custom_translation_table=custom_translation_table, optimize=True, verify=False, report=False)
                # the smoke run's eager side runs while the disk takes the weights
                eager_trials = _in_thread(_size_trials, loaded.module, specs, sizes, ranges)
                written = _save_program(program, raw_path)
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
        problem, fix = _explain_export_error(exc, loaded.source_file, loaded.module)
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

    from onnxtax.core.weights import read_skeleton

    # the graph without its weights: they stay in the exporter's files until written out once
    model = read_skeleton(raw_path).model
    base = scratch
    produced = _default_opset(model)
    result.stage = "opset"
    target = result.target
    lock_to = min(opset, target.max_opset) if target else opset  # the target's highest opset, converted down
    progress(f"locking opset {lock_to} (exporter wrote {produced})")
    model, note = _lock_opset(model, lock_to)
    _unify_custom_functions(model)
    if lock_to != opset:
        note = f"{note or f'opset {lock_to}'} (--opset {opset} lowered to what onnxruntime {target.series} loads)"
    result.checks.append(CheckRecord("opset", True, note or f"opset {opset} as requested"))
    result.opset = _default_opset(model)

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
    result.warnings.extend(_lock_dynamic_axes(model, specs, sizes))
    result.checks.append(CheckRecord("dynamic_axes", True,
                                     ", ".join(f"{s} kept" for s in symbols_of(specs)) or "no dynamic axes declared"))

    model.producer_name = "onnxtax"
    from onnxtax.core.version import VERSION as __version__

    model.producer_version = __version__
    external = external_data == "always" or (external_data == "auto" and _needs_external(model))
    staged = stage / output.name
    result.stage = "onnx.checker"
    progress("running onnx.checker (full check)")
    digests, base = _save(model, base, staged, external, written)
    try:
        _check_written(staged, external)
    except Exception as exc:  # noqa: BLE001 - onnx raises ValidationError / InferenceError
        raise CheckFailed(f"onnx.checker rejects the exported model: {str(exc).strip().splitlines()[0][:300]}",
                          "try another --opset or --exporter; --debug shows the exporter's log") from exc
    result.checks.append(CheckRecord("onnx.checker", True, "full check with strict shape inference"))

    custom = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    result.stage = "onnxruntime_smoke"
    progress("running in ONNX Runtime at two sizes per dynamic axis")
    try:
        details, observed, constant = _smoke_run(staged, loaded.module, specs, sizes, names, progress, ranges, data,
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
    repairs = _repair_output_dims(model, observed)
    if repairs:
        result.warnings.extend(repairs)
        digests, base = _save(model, base, staged, external)
        _check_written(staged, external)

    files = [p for p in (staged.with_name(staged.name + ".data"), staged) if p in digests]
    ins, outs = _io_records(model)
    result.inputs, result.outputs = ins, outs
    result.files = [str(output.parent / p.name) for p in files]
    result.size_bytes = sum(p.stat().st_size for p in files)
    manifest = _manifest(loaded, model, specs, sizes, staged, files, exporter, opset, result, digests)
    result.manifest = manifest
    manifest_staged = stage / manifest_path_for(output).name
    from onnxtax.core.files import write_json_atomic

    write_json_atomic(manifest_staged, manifest)
    # data first, model next, manifest last: a reader never sees a manifest without its files
    publish([(p, output.parent / p.name) for p in files] + [(manifest_staged, manifest_path_for(output))])
    stale = output.with_name(output.name + ".data")
    if not external and stale.exists():
        stale.unlink()  # an old sidecar from a previous export would be misleading


def _manifest(loaded, model, specs, sizes, staged: Path, files: list[Path], exporter: str, opset: int,
              result: ExportResult, digests: dict[Path, str]) -> dict:
    from onnxtax.core.report import package_versions

    data_files = [p for p in files if p != staged]
    used_by: dict[str, list] = {}
    for s in specs:
        for axis, d in enumerate(s.dims):
            if isinstance(d, str):
                used_by.setdefault(d, []).append([s.name, axis])
    return {
        "format_version": FORMAT_VERSION,
        "created_utc": datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "model": loaded.to_dict(),
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
    }
