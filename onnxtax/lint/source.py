"""Source rules: trace the PyTorch model before export and report, at the user's
file:line, what one ONNX graph cannot express.

Two tracers, because each sees what the other misses:
- `torch.export.export` (non-strict, dynamic axes as Dim.DYNAMIC, as `onnxtax export` uses);
  when it fails, `torch.export.draft_export`, which keeps going past data-dependent guards
  and lists every one with the user's stack (plain export stops at the first
  `GuardOnDataDependentSymNode`, and is ~3x faster when nothing is wrong). The exported
  graph shows torch.library custom ops.
- `torch.jit.trace` emits a TracerWarning for every tensor turned into a Python bool or
  number (what the TorchScript exporter silently freezes) and records autograd.Function
  calls as PythonOp nodes.
Findings from both are merged per (file, line).
"""

from __future__ import annotations

import dataclasses
import re
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from onnxtax.core.errors import InputSpecError
from onnxtax.core.frames import Frame, frames_in_text, frames_of, is_library, user_frame
from onnxtax.core.inputs import dynamic_shapes, torch_tensors
from onnxtax.lint.findings import RULES, Finding
from onnxtax.core.manifest import export_sizes_of
from onnxtax.core.specs import InputSpec, SampleRecipe, export_sizes, make_inputs, symbols_of

SOURCE_RULES = ("source-data-dependent-branch", "source-tensor-to-python", "source-custom-op", "source-trace")
_BRANCH_LINE = re.compile(r"^\s*(if|elif|while|assert)\b|\bif\b.*\belse\b")
_TO_PYTHON = re.compile(r"\.item\(|\bint\(|\bfloat\(|\bbool\(|\.tolist\(|\.numpy\(")
_RELATIONAL = re.compile(r"^(Eq|Ne|Lt|Le|Gt|Ge|And|Or|Not)\(|[<>]=?|==|!=")
_TRACER_KINDS = (
    (re.compile(r"Python boolean"), "source-data-dependent-branch", "a tensor is used as a Python bool"),
    (re.compile(r"Python (integer|float|number|index)"), "source-tensor-to-python",
     "a tensor is turned into a Python number"),
    (re.compile(r"Python list"), "source-tensor-to-python", "a tensor is turned into a Python list"),
    (re.compile(r"NumPy array"), "source-tensor-to-python", "a tensor is turned into a NumPy array"),
)
_SAFE_NAMESPACES = {"aten", "prims", "higher_order", "_operator", "quantized_decomposed"}


@dataclass
class SourceResult:
    findings: list[Finding] = field(default_factory=list)
    info: dict = field(default_factory=dict)


@dataclass
class _Hit:
    rule: str
    file: str
    line: int
    how: list[str] = field(default_factory=list)
    detail: dict = field(default_factory=dict)




def _specs_and_sizes(inputs: list[InputSpec] | None, manifest: dict | None) -> tuple[list[InputSpec], dict[str, int]]:
    specs = list(inputs or [])
    if not specs and manifest and manifest.get("inputs"):
        specs = [InputSpec.from_dict(d) for d in manifest["inputs"]]
    if not specs:
        raise InputSpecError("--source needs the model's inputs",
                             "add --input NAME:DIMS[:DTYPE] per forward() argument (or lint a model exported by "
                             "`onnxtax export`, whose manifest lists them)")
    sizes = export_sizes(specs)
    recorded = export_sizes_of(manifest)
    for sym in symbols_of(specs):
        if recorded.get(sym, 0) > 1:
            sizes[sym] = recorded[sym]
    return specs, sizes


def lint_source(source: Any, inputs: list[InputSpec] | None = None, *, manifest: dict | None = None) -> SourceResult:
    """Trace `source` (a spec string or an nn.Module) with example inputs and report
    data-dependent branches, tensors turned into Python values and untranslatable custom ops."""
    from onnxtax.core.loading import check_inputs_match, resolve_model

    started = time.perf_counter()
    loaded = resolve_model(source)
    loaded.module.eval()
    hub = loaded.hub  # hf:/st: specs: the inputs and their ranges derived from the folder
    if hub is not None and not inputs and not (manifest or {}).get("inputs"):
        inputs = list(hub.inputs)
    specs, sizes = _specs_and_sizes(inputs, manifest)
    loaded = dataclasses.replace(loaded, module=check_inputs_match(loaded.module, specs, loaded.spec))
    ranges = {k: v for k, v in (hub.ranges if hub is not None else {}).items() if k in {s.name for s in specs}}
    args = torch_tensors(specs, make_inputs(specs, sizes, SampleRecipe(seed=0, ranges=ranges)))
    user_file = loaded.source_file
    hits: dict[tuple[str, int, str], _Hit] = {}
    extra: list[Finding] = []
    steps: dict[str, str] = {}
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    draft_error = _run_export(loaded.module, args, specs, user_file, hits, extra, steps)
    timings["torch_export"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    trace_error = _run_jit_trace(loaded.module, args, user_file, hits, extra, steps)
    timings["jit_trace"] = round(time.perf_counter() - t0, 3)
    if draft_error is not None and trace_error is not None:
        exc = draft_error
        where = user_frame(frames_of(exc), user_file)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        f = Finding("source-trace", RULES["source-trace"].severity,
                    f"neither torch.export nor torch.jit.trace could run the model with "
                    f"{', '.join(str(s) for s in specs)} ({', '.join(f'{k}={v}' for k, v in sizes.items()) or 'static'}), "
                    f"so no source rule checked it: {type(exc).__name__}: {first}",
                    "check that --input (or the manifest's inputs) matches what forward() expects (order, shapes, "
                    "dtypes); if it does, fix the error at the line shown: neither exporter gets past it either")
        if where:
            f.source_location = where.location
        extra.append(f)

    findings = _merge(hits) + extra
    info = {"spec": loaded.spec, "file": user_file, "inputs": [str(s) for s in specs], "sizes": sizes,
            "steps": steps, "step_seconds": timings, "seconds": round(time.perf_counter() - started, 3)}
    return SourceResult(findings, info)


def _quiet_torch_logs():
    import logging

    for name in ("torch.export", "torch._export", "torch.fx.experimental.symbolic_shapes", "torch._dynamo",
                 "torch.onnx", "torch._logging"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # fake tensors log a full traceback (at ERROR) for an input that does not fit the model;
    # the source-trace finding reports that error in one line
    logging.getLogger("torch._subclasses.fake_tensor").setLevel(logging.CRITICAL)


def _add(hits: dict, rule: str, frame: Frame | None, how: str, **detail) -> None:
    if frame is None:
        return
    key = (frame.file, frame.line, rule)
    hit = hits.setdefault(key, _Hit(rule, frame.file, frame.line))
    if how not in hit.how:
        hit.how.append(how)
    for k, v in detail.items():
        hit.detail.setdefault(k, v)


def _classify_guard(expr: str, code: str) -> str:
    if _BRANCH_LINE.search(code):
        return "source-data-dependent-branch"
    if _TO_PYTHON.search(code):
        return "source-tensor-to-python"
    return "source-data-dependent-branch" if _RELATIONAL.search(expr) else "source-tensor-to-python"


def _run_export(module, args, specs, user_file, hits, extra, steps) -> BaseException | None:
    import contextlib
    import io

    import torch

    _quiet_torch_logs()
    # Plain torch.export is ~3x faster; draft_export (which lists every data-dependent guard
    # instead of stopping at the first) runs only when it fails.
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.export.export(module, args, dynamic_shapes=dynamic_shapes(specs, module), strict=False)
        steps["torch_export"] = "ok"
        _custom_ops_in(program, user_file, extra)
        return None
    except Exception as exc:  # noqa: BLE001 - the draft export below says where and why
        steps["torch_export"] = f"failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.export.draft_export(module, args, dynamic_shapes=dynamic_shapes(specs, module), strict=False)
    except Exception as exc:  # noqa: BLE001 - recorded; jit.trace may still see the model
        steps["draft_export"] = f"failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
        where = user_frame(frames_of(exc) + frames_in_text(str(exc)), user_file)
        text = f"{type(exc).__name__}: {exc}"
        if where and re.search(r"GuardOnDataDependentSymNode|data-dependent", text):
            rule = _classify_guard("", where.code)
            _add(hits, rule, where, "torch.export")
        return exc
    report = getattr(program, "_report", None)
    failures = list(getattr(report, "failures", []) or [])
    names = _interned_filenames(report)
    counted = 0
    for failure in failures:
        kind = str(getattr(failure, "failure_type", ""))
        data = getattr(failure, "data", {}) or {}
        frames = [Frame(names[str(fr.get("filename"))], int(fr.get("line", 0)))
                  for fr in data.get("user_stack", []) if isinstance(fr, dict) and str(fr.get("filename")) in names]
        where = user_frame(frames, user_file)
        if "DATA_DEPENDENT" in kind:
            counted += 1
            expr = str(data.get("expr", ""))
            rule = _classify_guard(expr, where.code if where else "")
            _add(hits, rule, where, "torch.export", guard=expr, example_value=str(data.get("result", "")))
        elif "FAKE_KERNEL" in kind:
            op = str(data.get("op", "?"))
            f = Finding("source-custom-op", "error",
                        f"custom op {op} has no fake (meta) kernel: torch.export cannot trace it without running it",
                        f"register one with @{op.split('::')[-1]}.register_fake (torch.library), then export")
            f.op_type, f.domain = op.split("::")[-1], op.split("::")[0]
            if where:
                f.source_location = where.location
            extra.append(f)
    steps["draft_export"] = f"ok ({counted} data-dependent guard(s))"
    _custom_ops_in(program, user_file, extra)
    return None


def _interned_filenames(report) -> dict[str, str]:
    """draft_export's stacks name files by intern id. Its report only lists the names
    interned during this export; torch's process-wide table has the ones interned
    earlier (by any previous export in the process). An id neither knows is dropped."""
    names: dict[str, str] = {}
    try:
        from torch._logging import structured

        names.update({str(v): k for k, v in structured.INTERN_TABLE.items()})
    except (ImportError, AttributeError):
        pass
    names.update({str(k): v for k, v in (getattr(report, "str_to_filename", {}) or {}).items()})
    return names


def _custom_ops_in(program, user_file, extra) -> None:
    """torch.library ops (non-aten namespaces) in the exported graph that the ONNX registry lacks."""
    import torch

    targets: dict[Any, list] = {}
    for node in program.graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        if node.target.namespace in _SAFE_NAMESPACES:
            continue
        targets.setdefault(node.target, []).append(node)
    if not targets:
        return
    registry = _onnx_registry()
    for target, nodes in targets.items():
        if registry is not None and registry.is_registered(target):
            continue
        name = f"{target.namespace}::{target._opname}"
        stack = nodes[0].meta.get("stack_trace") or ""
        frame = user_frame(frames_in_text(stack), user_file)
        loc = frame.location if frame else None
        f = Finding("source-custom-op", "error",
                    f"custom op {name} ({len(nodes)} call(s)) has no ONNX translation in torch.onnx: the dynamo "
                    f"exporter fails with 'No ONNX function found'",
                    "rewrite it with standard torch ops; or give torch.onnx.export(custom_translation_table={"
                    f"torch.ops.{target.namespace}.{target._opname}.default: onnxscript_fn}}) a translation to "
                    "standard ONNX ops; or emit a custom-domain node and ship an ORT custom-op library")
        f.op_type, f.domain, f.source_location = target._opname, target.namespace, loc
        f.details = {"op": name, "calls": len(nodes)}
        extra.append(f)


def _onnx_registry():
    import contextlib
    import io

    try:
        from torch.onnx._internal.exporter._registration import ONNXRegistry

        _quiet_torch_logs()
        with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ONNXRegistry.from_torchlib()
    except Exception:  # noqa: BLE001 - private API moved: report every non-aten op
        return None


def _run_jit_trace(module, args, user_file, hits, extra, steps) -> BaseException | None:
    import torch

    recorded: list[tuple[str, list[Frame]]] = []
    library: list[str] = []

    def hook(message, category, filename, lineno, file=None, line=None):
        if category.__name__ != "TracerWarning":
            return
        if is_library(filename or ""):
            # raised inside torch (e.g. nn.MultiheadAttention's checks): not the user's code, and
            # torch.export handles it; it only matters to the TorchScript exporter
            library.append(f"{filename}:{lineno}")
            return
        recorded.append((str(message), [Frame(filename, lineno)]))

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = hook
            traced = torch.jit.trace(module, args, check_trace=False, strict=False)
    except Exception as exc:  # noqa: BLE001
        steps["jit_trace"] = f"failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
        _tracer_hits(recorded, user_file, hits)
        return exc
    _tracer_hits(recorded, user_file, hits)
    steps["jit_trace"] = f"ok ({len(recorded)} TracerWarning(s) in the model's code)"
    if library:
        steps["jit_trace_library_warnings"] = (f"{len(library)} inside torch (first: {library[0]}); they matter "
                                               f"only to the TorchScript exporter")
    seen: set[str] = set()
    for node in traced.inlined_graph.nodes():
        if node.kind() != "prim::PythonOp":
            continue
        try:
            fn_cls = getattr(node.pyobj(), "__self__", None)
        except Exception:  # noqa: BLE001
            fn_cls = None
        name = getattr(fn_cls, "__qualname__", None) or node.pyname()
        if name in seen or (fn_cls is not None and hasattr(fn_cls, "symbolic")):
            continue
        seen.add(name)
        # sourceRange lists the innermost call first; user_frame wants outermost first
        frames = [Frame(f, int(n)) for f, n in re.findall(r"^(.+?)\((\d+)\): ", node.sourceRange(), re.M)][::-1]
        where = user_frame(frames, user_file)
        f = Finding("source-custom-op", "warning",
                    f"autograd.Function {name} has no symbolic(): the TorchScript exporter (dynamo=False) fails on "
                    f"it; the dynamo exporter traces its forward() instead",
                    "keep the default dynamo exporter, or add a staticmethod symbolic(g, ...) emitting ONNX ops")
        f.op_type = name
        if where:
            f.source_location = where.location
        f.details = {"kind": "autograd.Function"}
        extra.append(f)
    return None


def _tracer_hits(recorded, user_file, hits) -> None:
    for message, frames in recorded:
        for pattern, rule, what in _TRACER_KINDS:
            if pattern.search(message):
                _add(hits, rule, user_frame(frames, user_file), "torch.jit.trace", tracer=what)
                break


def _merge(hits: dict) -> list[Finding]:
    """One finding per line; a branch at a line wins over a Python value taken at the same line."""
    out: list[Finding] = []
    branch_lines = {(h.file, h.line) for h in hits.values() if h.rule == "source-data-dependent-branch"}
    for hit in sorted(hits.values(), key=lambda h: (h.file, h.line, h.rule)):
        if hit.rule == "source-tensor-to-python" and (hit.file, hit.line) in branch_lines:
            continue
        code = Frame(hit.file, hit.line).code
        shown = f" `{code}`" if code else ""
        found = " and ".join(hit.how)
        if hit.rule == "source-data-dependent-branch":
            msg = (f"Python control flow on a tensor's value{shown}: the dynamo exporter fails here "
                   f"(GuardOnDataDependentSymNode), the TorchScript exporter freezes the branch the example took")
            hint = ("rewrite with torch.cond(pred, true_fn, false_fn, (x,)) (exports as an ONNX If), or compute "
                    "both sides and select with torch.where, or move the decision out of the model")
        else:
            msg = (f"a tensor becomes a Python value{shown}: the TorchScript exporter bakes the example's value "
                   f"into the graph, the dynamo exporter needs it symbolic")
            hint = ("keep it a tensor (e.g. x.amax() instead of int(x.max()), torch.where instead of if), or "
                    "compute it outside the model and pass it as an input")
        f = Finding(hit.rule, RULES[hit.rule].severity, msg, hint)
        f.source_location = f"{hit.file}:{hit.line}"
        f.details = {"found_by": found, "code": code, **hit.detail}
        out.append(f)
    return out
