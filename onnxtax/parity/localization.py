"""Where an ONNX artifact first departs from its eager PyTorch source, on one provider.

Parity says an output is wrong; this says which module made it wrong. For one failing
case (provider x shape x sample) it runs the eager model with forward hooks and the ONNX
model with the matching intermediate values as extra outputs, on the same provider, and
compares module by module in the order the eager forwards returned (children before their
parent). The first module outside parity's tolerance is the suspect. Its ONNX nodes are
then run alone on eager's inputs: still wrong means the error is made there ("local"),
right means it arrives with the inputs ("inherited", from ops outside any submodule).

Memory stays bounded: values are compared in chunks of modules whose outputs fit
`memory_budget_mb` (eager copy + ONNX copy); each chunk is one eager run and one session
run, and only numbers are kept between chunks. No copy of the graph holds weight bytes.
On CPU, when parity shared the weights with the eager model (onnxtax.core.sharing), every
localisation session takes the same OrtValues over the module's parameters, so the extra
memory is one chunk of activations plus the weights parity could not share; otherwise (and
on other providers, which compile their own copy) each session reads the weights from the
file: one more copy of them while it runs, one session at a time. Weights are compared with
parameters one at a time, block by block, and a shared weight is not read at all.

JSON schema of `Localization.to_dict()` (keys stable):
{
  "status": "localized" | "in-root" | "not-reproduced" | "no-divergence" | "error" | "out-of-time",
  "summary": "<one line, what to read first>",
  "provider": "openvino:device_type=CPU", "provider_name": "OpenVINOExecutionProvider",
  "provider_specific": true | false | null,    (another provider passes this case / none does / one provider)
  "case": {"shape": "batch=4", "sample": 1, "output": "logits"},
  "module": "encoder.layer.1.output.dense" | null, "class_name": "Linear" | null,
  "node": "/encoder/layer.1/output/dense/Gemm" | null, "op_type": "Gemm" | null,
  "node_basis": "weight" | "only node" | "module output" | null,   (how the node was picked)
  "source": null | {"file", "line", "function", "code", "origin": "user" | "library"},
  "origin": "local" | "inherited" | null, "origin_detail": "<one line>" | null,
  "first": null | point, "trail": [point, ...],   (the next divergent modules, then the output)
  "rows": null | {"axis": 0, "size": 8, "diverging": [2, 5], "common": "<text>" | null},
  "positions": null | {"axis": 1, "size": 33, "diverging": [17, ...], "first": 17},
  "weights": [{"initializer": "l.weight", "parameter": "l.weight", "max_abs_diff": 0.01}],
  "graph_only_modules": [...], "eager_only_modules": [...],   (frozen-branch evidence)
  "branch_lines": [12],                     (if/while lines in the suspect's forward)
  "compared_modules": 12, "chunks": 1, "peak_chunk_mb": 0.4, "memory_budget_mb": 512,
  "session_weights": "shared" | "file",    (where the localisation sessions got the weights)
  "exporter": "dynamo" | "torchscript" | "unknown", "duration_s": 0.8, "notes": [...]
}
point = {"module", "class_name", "value", "max_abs_diff", "max_rel_diff", "tolerance_ratio", "outside",
         "elements", "problem": null | "shape [2, 3] vs source [2, 4]"}
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from onnxtax.parity.explain import summary_line, where_it_diverges
from onnxtax.parity.intermediates import (EagerCapture, GraphMap, SourceLine, branch_lines, forward_of, frame_of_stack,
                                   line_text)

from onnxtax.core.defaults import LOCALIZE_MEMORY_MB as DEFAULT_MEMORY_BUDGET_MB
from onnxtax.core.defaults import LOCALIZE_TIME_BUDGET_S as DEFAULT_TIME_BUDGET_S
_TRAIL = 6


@dataclass
class Point:
    """One module's output compared: eager vs ONNX, on parity's tolerance."""

    module: str
    class_name: str
    value: str | None
    max_abs_diff: float = 0.0
    max_rel_diff: float = 0.0
    tolerance_ratio: float = 0.0
    outside: int = 0
    elements: int = 0
    problem: str | None = None

    @property
    def diverges(self) -> bool:
        return self.problem is not None or self.tolerance_ratio > 1

    def to_dict(self) -> dict:
        return {"module": self.module, "class_name": self.class_name, "value": self.value,
                "max_abs_diff": self.max_abs_diff, "max_rel_diff": self.max_rel_diff,
                "tolerance_ratio": self.tolerance_ratio, "outside": self.outside, "elements": self.elements,
                "problem": self.problem}

    def text(self) -> str:
        if self.problem:
            return f"{self.module or 'output'}: {self.problem}"
        return f"{self.module or 'output'} {self.max_abs_diff:.3g} ({self.tolerance_ratio:.3g}x tolerance)"


@dataclass
class Localization:
    """The first divergence of one case on one provider; truthy when it was found."""

    provider: str
    provider_name: str
    case: dict
    status: str = "no-divergence"
    summary: str = ""
    provider_specific: bool | None = None
    module: str | None = None
    class_name: str | None = None
    node: str | None = None
    op_type: str | None = None
    node_basis: str | None = None
    source: SourceLine | None = None
    origin: str | None = None
    origin_detail: str | None = None
    inherited_value: str | None = None  # the ONNX value feeding the first divergent module that already differs
    first: Point | None = None
    trail: list[Point] = field(default_factory=list)
    rows: dict | None = None
    positions: dict | None = None
    weights: list[dict] = field(default_factory=list)
    graph_only_modules: list[str] = field(default_factory=list)
    eager_only_modules: list[str] = field(default_factory=list)
    branch_lines: list[int] = field(default_factory=list)
    compared_modules: int = 0
    chunks: int = 0
    peak_chunk_mb: float = 0.0
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB
    session_weights: str = "file"  # "shared": CPU sessions took parity's shared weights; "file": read them
    exporter: str = "unknown"
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return self.status in ("localized", "in-root")

    def __bool__(self) -> bool:
        return self.found

    def to_dict(self) -> dict:
        return {"status": self.status, "summary": self.summary, "provider": self.provider,
                "provider_name": self.provider_name, "provider_specific": self.provider_specific,
                "case": dict(self.case), "module": self.module, "class_name": self.class_name,
                "node": self.node, "op_type": self.op_type, "node_basis": self.node_basis,
                "source": self.source.to_dict() if self.source else None,
                "origin": self.origin, "origin_detail": self.origin_detail,
                "first": self.first.to_dict() if self.first else None,
                "trail": [p.to_dict() for p in self.trail], "rows": self.rows, "positions": self.positions,
                "weights": list(self.weights), "graph_only_modules": list(self.graph_only_modules),
                "eager_only_modules": list(self.eager_only_modules), "branch_lines": list(self.branch_lines),
                "compared_modules": self.compared_modules, "chunks": self.chunks,
                "peak_chunk_mb": self.peak_chunk_mb, "memory_budget_mb": self.memory_budget_mb,
                "session_weights": self.session_weights, "exporter": self.exporter, "duration_s": self.duration_s, "notes": list(self.notes)}


# --------------------------------------------------------------------------- comparison
def compare_point(module: str, class_name: str, value: str | None, onnx: np.ndarray, eager: np.ndarray,
                  rtol: float, atol: float) -> tuple[Point, np.ndarray | None]:
    """The point and its mask of elements outside parity's element test (onnxtax.core.compare):
    |a-b| <= atol*rms(b) + rtol*|b| for floats, exact for integers; NaN/Inf must match."""
    from onnxtax.core.compare import element_test, rms, row_blocks, tolerance_ratios

    point = Point(module, class_name, value)
    if onnx.shape != eager.shape:
        point.problem = f"shape {list(onnx.shape)} vs source {list(eager.shape)}"
        point.tolerance_ratio = math.inf
        return point, None
    point.elements = int(eager.size)
    if not eager.size:
        return point, np.zeros(eager.shape, bool)
    exact = eager.dtype.kind not in "fc"
    r, t = (0.0, 0.0) if exact else (rtol, atol * rms([eager]))
    mask = np.zeros(eager.shape, bool)
    special = False  # a NaN/Inf on one side only
    # block by block: the float64 temporaries of a whole weight would be several times its size
    for onnx_block, eager_block, mask_block in row_blocks(onnx, eager, mask):
        a, b = onnx_block.astype(np.float64), eager_block.astype(np.float64)
        diff, limit, finite, one_sided, outside = element_test(a, b, r, t)  # parity's own element test
        mask_block[...] = outside
        point.outside += int(mask_block.sum())
        point.max_abs_diff = max(point.max_abs_diff, float(diff.max()))
        nz = finite & (b != 0)
        if nz.any():
            point.max_rel_diff = max(point.max_rel_diff, float((diff[nz] / np.abs(b[nz])).max()))
        special = special or bool(one_sided.any())
        if not special:
            point.tolerance_ratio = max(point.tolerance_ratio, float(tolerance_ratios(diff, limit).max()))
    if special:
        point.tolerance_ratio = math.inf
    return point, mask


def _best_match(module: str, class_name: str, eager: np.ndarray, candidates: dict[str, np.ndarray], rtol: float,
                atol: float) -> tuple[Point, np.ndarray | None] | None:
    """The ONNX value standing for one eager output: same shape, closest to it. Choosing the
    closest keeps an unrelated value of the same shape from faking a divergence."""
    best = None
    for name, arr in candidates.items():
        if arr.shape != eager.shape or (arr.dtype.kind in "fc") != (eager.dtype.kind in "fc"):
            continue
        pm = compare_point(module, class_name, name, arr, eager, rtol, atol)
        if best is None or pm[0].tolerance_ratio < best[0].tolerance_ratio:
            best = pm
    return best


# --------------------------------------------------------------------------- the search
def _torch_args(specs: Sequence[Any], arrays: dict[str, np.ndarray]) -> list[Any]:
    import torch

    tensors = []
    for spec in specs:
        t = torch.from_numpy(np.array(arrays[spec.name], copy=True))
        if spec.dtype == "bfloat16":
            t = t.to(torch.bfloat16)
        tensors.append(t)
    return tensors


def localize(module: Any, onnx_path: Any, arrays: dict[str, np.ndarray], *, specs: Sequence[Any],
             mapping: dict[str, str], request: Any, rtol: float, atol: float, case: dict | None = None,
             warmup: Sequence[dict[str, np.ndarray]] = (), opt_level: str = "all", threads: int | None = None,
             memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB, time_budget_s: float = DEFAULT_TIME_BUDGET_S,
             shared_weights: Any = None) -> Localization:
    """Find the first module whose ONNX output departs from eager on `request`'s provider.

    Args:
        module: the eager nn.Module (eval mode). arrays: one sample, by input spec name.
        specs: the input specs in forward() order; mapping: spec name -> ONNX input name.
        request: the ProviderRequest to examine. rtol, atol: parity's tolerance.
        warmup: feeds (by ONNX input name) run first in the same session: a provider keeping
            state from earlier shapes shows its fault only after them.
        shared_weights: parity's onnxtax.core.sharing.SharedWeights of this model and module, or None:
            CPU sessions then take those weights from the module's memory instead of the file.
    Never raises for what it finds: a failure to localise is a status with a reason.
    """
    t0 = time.perf_counter()
    loc = Localization(request.label, request.name, dict(case or {}), memory_budget_mb=memory_budget_mb)
    try:
        _search(loc, module, onnx_path, arrays, specs, mapping, request, rtol, atol, warmup, opt_level,
                threads, memory_budget_mb, t0 + time_budget_s, shared_weights)
    except Exception as exc:  # noqa: BLE001 - ORT/torch errors inside an optional diagnosis
        from onnxtax.core.providers import ort_error_summary

        line, _ = ort_error_summary(exc)
        loc.status, loc.summary = "error", f"localisation could not run: {line}"
    loc.duration_s = time.perf_counter() - t0
    return loc


def _search(loc: Localization, module: Any, onnx_path: Any, arrays: dict, specs, mapping, request, rtol, atol,
            warmup, opt_level, threads, budget_mb, deadline, shared_weights=None) -> None:
    graph = GraphMap(onnx_path, shared=shared_weights)
    loc.exporter = graph.exporter
    loc.session_weights = "shared" if graph.shares_with(request) else "file"
    loc.notes.append(_weights_note(graph, request))
    args = _torch_args(specs, arrays)
    feeds = {mapping[n]: arrays[n] for n in mapping}
    plan = EagerCapture(module)
    eager_final = plan.run(args)

    compared, boundary = [], {}
    for path in plan.order:
        call = plan.calls[path]
        outs = graph.boundary_outputs(path) if call.calls == 1 else []
        if outs and call.output_shapes:
            compared.append(path)
            boundary[path] = outs
    loc.graph_only_modules, loc.eager_only_modules = _branch_evidence(graph, plan, module)
    if not compared:
        loc.notes.append("no module's output could be found in the ONNX graph (no exporter scope metadata or "
                         "node names): only the outputs are compared")

    chunks = _chunks(compared, plan, boundary, sum(a.nbytes for a in eager_final), budget_mb)
    loc.compared_modules, loc.chunks = len(compared), len(chunks)
    points: list[Point] = []
    kept: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}  # the first divergent module only
    final_point = None
    for ci, chunk in enumerate(chunks or [[]]):
        if ci and time.perf_counter() > deadline:
            loc.notes.append(f"stopped after {ci} of {len(chunks)} chunks: the time budget ran out")
            if not any(p.diverges for p in points):
                loc.status, loc.summary = "out-of-time", (
                    f"no divergent module among the first {len(points)} of {len(compared)} before the time budget "
                    "ran out (raise it with --localize-budget)")
                return
            break
        capture = EagerCapture(module, keep_outputs=chunk)
        capture.run(args)
        values = [v for p in chunk for v in boundary[p]]
        session = graph.session(graph.with_outputs(values), request, opt_level=opt_level, threads=threads)
        _warm(session, warmup)
        names = [o.name for o in session.get_outputs()]
        got = dict(zip(names, session.run(None, feeds)))
        del session
        held = sum(a.nbytes for a in got.values()) + sum(a.nbytes for v in capture.outputs.values() for a in v)
        loc.peak_chunk_mb = max(loc.peak_chunk_mb, held / 2**20)
        if ci == 0:
            final_point = _final_point(graph, got, eager_final, rtol, atol)
            if final_point is not None and not final_point.diverges:
                loc.status = "not-reproduced"
                loc.summary = (f"the outputs agree with the source when {request.name} also returns the intermediate "
                               "values (max ratio {:.3g}): the fault needs a graph the provider optimises differently, "
                               "or state from other runs".format(final_point.tolerance_ratio))
                return
        for path in chunk:
            cls = plan.calls[path].class_name
            cands = {v: got[v] for v in boundary[path] if v in got}
            for eager in capture.outputs.get(path, []):
                match = _best_match(path, cls, eager, cands, rtol, atol)
                if match is None:
                    continue
                point, mask = match
                points.append(point)
                if point.diverges and not kept:
                    kept[path] = (got[point.value], eager, mask)
                break  # a module's first tensor output stands for it
        del got, capture

    first = next((p for p in points if p.diverges), None)
    later = [p for p in points if p.diverges and p is not first]
    loc.trail = _trail(first, later) + ([final_point] if final_point is not None else [])
    if first is None:
        _in_root(loc, graph, module, final_point)
        return
    loc.first, loc.module, loc.class_name = first, first.module, first.class_name
    onnx_value, eager_value, mask = kept[first.module]
    _pick_node(loc, graph, module, first, rtol, atol)
    _origin(loc, graph, module, first, args, feeds, eager_value, request, rtol, atol, warmup, opt_level, threads)
    if mask is not None:
        loc.rows, loc.positions = where_it_diverges(mask, specs, arrays)
    if loc.origin == "inherited":
        _blame_parent(loc, graph, module, first)
    try:
        loc.branch_lines = branch_lines(module.get_submodule(loc.module))
    except AttributeError:
        pass
    forward = forward_of(module, loc.module)
    if (loc.graph_only_modules or loc.origin == "inherited") and loc.branch_lines and forward is not None and (
            loc.node_basis != "weight"):
        # the graph and eager took different sides of a branch: the branch line itself is what to read
        line = loc.branch_lines[0]
        loc.source = SourceLine(forward.file, line, forward.function, line_text(forward.file, line), forward.origin)
    loc.status = "localized"
    loc.summary = summary_line(loc)


def _weights_note(graph: GraphMap, request: Any) -> str:
    """Where the localisation sessions got the weights, hence what they added to memory."""
    if graph.shares_with(request):
        sharing = graph.shared.sharing
        text = (f"localisation sessions took the {len(sharing.shared)} weight tensors parity shared with the eager "
                f"model from its memory (pre-packing off, as in parity's CPU session)")
        if sharing.not_shared:
            text += f"; {len(sharing.not_shared)} not shared were read from the file"
        return text
    why = (f"{request.name} compiles or copies the weights into its own memory" if request.name != "CPUExecutionProvider"
           else "parity shared none with the eager model (--share-weights never, or small weights)")
    return f"localisation sessions read the weights from the file, one more copy while each runs: {why}"


def _warm(session: Any, warmup: Sequence[dict]) -> None:
    """Replay earlier shapes in the session (best effort: a shape that cannot run is skipped)."""
    for feed in warmup:
        try:
            session.run(None, feed)
        except Exception:  # noqa: BLE001 - parity reports that shape on its own
            continue


def _chunks(paths: list[str], plan: EagerCapture, boundary: dict[str, list[str]], outputs_bytes: int,
            budget_mb: float) -> list[list[str]]:
    """Consecutive modules whose eager copy, ONNX copies (one per boundary value, sized like the eager
    output) and the graph's own outputs fit the budget (a larger module is a chunk alone)."""
    budget = budget_mb * 2**20
    chunks: list[list[str]] = []
    size = 0.0
    for p in paths:
        need = float(plan.calls[p].output_bytes) * (1 + len(boundary[p]))
        if not chunks or size + need > budget:
            chunks.append([])
            size = float(outputs_bytes)
        chunks[-1].append(p)
        size += need
    return chunks


def _final_point(graph: GraphMap, got: dict, eager_final: list[np.ndarray], rtol, atol) -> Point | None:
    worst = None
    for name, eager in zip(graph.graph_outputs, eager_final):
        if name in got:
            point, _ = compare_point("", "output", name, got[name], eager, rtol, atol)
            point.module = f"output {name}"
            if worst is None or point.tolerance_ratio > worst.tolerance_ratio:
                worst = point
    return worst


def _trail(first: Point | None, later: list[Point]) -> list[Point]:
    """The next divergent modules beside the suspect and beside its ancestors (its siblings, its block,
    the next blocks), so the trail reads block by block up to the output."""
    if first is None:
        return []
    parts = first.module.split(".")
    around = {".".join(parts[:k]) for k in range(len(parts))}  # '' and the suspect's ancestors
    steps = [p for p in later if p.module.rpartition(".")[0] in around]
    if len(steps) > _TRAIL - 1:
        steps = steps[:_TRAIL - 2] + steps[-1:]
    return [first] + steps


def _branch_evidence(graph: GraphMap, plan: EagerCapture, module: Any) -> tuple[list[str], list[str]]:
    """Modules the ONNX graph computes that eager did not run at this input, and modules with weights
    that eager ran but the graph lacks: the two sides of a branch frozen at export."""
    ran = set(plan.calls)
    existing = {p for p, _ in module.named_modules()}
    graph_only = [p for p in graph.members if p and p in existing and p not in ran
                  and (p.rpartition(".")[0] in ran or "." not in p)
                  and not any(r.startswith(p + ".") for r in ran)]  # a container (ModuleList) never runs itself
    params = {n.rpartition(".")[0] for n, _ in module.named_parameters()}
    eager_only = [p for p in plan.order if p in params and not graph.owned(p)
                  and (p.rpartition(".")[0] not in plan.calls or graph.owned(p.rpartition(".")[0]))]
    return sorted(graph_only), eager_only


def _pick_node(loc: Localization, graph: GraphMap, module: Any, first: Point, rtol: float, atol: float) -> None:
    """The node inside the suspect: one whose weight differs from the module's parameter, else its
    only node, else the node producing the module's divergent output."""
    for node, name, param, p in _weight_mismatches(graph, module, first.module, rtol, atol):
        loc.weights.append({"initializer": name, "parameter": param, "max_abs_diff": p.max_abs_diff,
                            "max_rel_diff": p.max_rel_diff})
        if loc.node is None:
            loc.node, loc.op_type, loc.node_basis = node.name, node.op_type, "weight"
            loc.source = frame_of_stack(node.stack_trace)
    if loc.node is None:
        owned = graph.owned(first.module)
        idx = owned[0] if len(owned) == 1 else graph.producer.get(first.value or "")
        if idx is not None:
            node = graph.nodes[idx]
            loc.node, loc.op_type = node.name, node.op_type
            loc.node_basis = "only node" if len(owned) == 1 else "module output"
            loc.source = frame_of_stack(node.stack_trace)
    if loc.source is None:
        loc.source = forward_of(module, first.module)


def _weight_mismatches(graph: GraphMap, module: Any, path: str, rtol: float, atol: float):
    """(node, initializer, parameter, point) for each weight of the suspect's nodes that matches none of
    the module's parameters: compared by name, else by shape (as is or transposed: the TorchScript
    exporter stores a Linear's weight transposed under a generated name). One weight is in memory
    at a time; a weight parity shared is the same bytes as its parameter, so it is not read at all."""
    try:
        params = {n if not path else f"{path}.{n}": t for n, t in module.get_submodule(path).named_parameters()}
    except AttributeError:
        return
    same = set(graph.shared.names) if graph.shared is not None else set()
    shapes = {n: tuple(t.shape) for n, t in params.items()}

    def array(n: str) -> np.ndarray:
        return params[n].detach().float().cpu().numpy()

    for idx in graph.owned(path):
        node = graph.nodes[idx]
        for name in node.inputs:
            if name not in graph.initializers or (name in same and name in params):
                continue  # shared: byte for byte the parameter of that name, a difference of 0
            w = graph.initializer_array(name)
            if w is None or w.dtype.kind != "f":
                continue
            views = [(n, array(n)) for n in params if n == name]
            if not views:
                for n, shape in shapes.items():
                    if shape == w.shape or (len(shape) == 2 and shape[::-1] == w.shape):
                        v = array(n)
                        views += [(n, x) for x in (v, v.T if v.ndim == 2 else None)
                                  if x is not None and x.shape == w.shape]
            compared = [(n, compare_point(n, "", name, w, v, rtol, atol)[0]) for n, v in views]
            del w, views
            if compared and all(p.diverges for _, p in compared):
                param, point = min(compared, key=lambda c: c[1].tolerance_ratio)
                yield node, name, param, point


def _origin(loc: Localization, graph: GraphMap, module: Any, first: Point, args, feeds, eager_out: np.ndarray,
            request, rtol, atol, warmup, opt_level, threads) -> None:
    """Local or inherited: the suspect's nodes alone, fed eager's inputs to the module."""
    capture = EagerCapture(module, keep_inputs=[first.module])
    capture.run(args)
    eager_inputs = capture.inputs.get(first.module, [])
    names = graph.boundary_inputs(first.module)
    session = graph.session(graph.with_outputs(names), request, opt_level=opt_level, threads=threads)
    _warm(session, warmup)
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    del session
    fed, agree, worst_in, worst_name = {}, True, None, None
    for name in names:
        onnx_in = got.get(name)
        if onnx_in is None:
            continue
        match = _best_match(first.module, "", onnx_in, {str(i): e for i, e in enumerate(eager_inputs)}, rtol, atol)
        if match is None:  # not an argument of forward() (e.g. a parent's value read through self): keep ONNX's
            fed[name] = onnx_in
            continue
        point, _ = match
        fed[name] = eager_inputs[int(point.value)]
        if point.diverges:
            agree = False
            if worst_in is None or point.tolerance_ratio > worst_in.tolerance_ratio:
                worst_in, worst_name = point, name
    if agree:
        loc.origin = "local"
        loc.origin_detail = (f"its inputs agree with eager's within tolerance, its output does not "
                             f"({first.max_abs_diff:.3g}): the difference is made inside {first.module}")
        return
    try:
        sub = graph.session(graph.subgraph(first.module, fed, [first.value]), request, opt_level=opt_level,
                            threads=threads)
        alone = sub.run([first.value], fed)[0]
    except Exception as exc:  # noqa: BLE001 - the module may not cut out cleanly (e.g. nested functions)
        from onnxtax.core.providers import ort_error_summary

        loc.origin_detail = f"its inputs already differ ({worst_in.max_abs_diff:.3g}); running it alone failed: " \
                            f"{ort_error_summary(exc)[0][:160]}"
        return
    point, _ = compare_point(first.module, first.class_name, first.value, alone, eager_out, rtol, atol)
    if point.diverges:
        loc.origin = "local"
        loc.origin_detail = (f"fed eager's inputs, its ONNX nodes alone still differ ({point.max_abs_diff:.3g}, "
                             f"{point.tolerance_ratio:.3g}x tolerance): the difference is made inside {first.module}")
    else:
        loc.origin, loc.inherited_value = "inherited", worst_name
        loc.origin_detail = (f"fed eager's inputs, its ONNX nodes alone agree ({point.max_abs_diff:.3g}); its ONNX "
                             f"inputs already differ by {worst_in.max_abs_diff:.3g}: the difference comes from ops "
                             f"before it outside any submodule")


def _blame_parent(loc: Localization, graph: GraphMap, module: Any, first: Point) -> None:
    """An inherited difference comes from the parent's own ops before the first divergent module:
    the parent (or the root forward) is the suspect, the node computing the differing input its node."""
    parent = first.module.rpartition(".")[0]
    loc.module = parent
    loc.class_name = type(module.get_submodule(parent)).__name__
    loc.node = loc.op_type = loc.source = None
    producer = graph.producer.get(loc.inherited_value or "")
    if producer is not None:
        node = graph.nodes[producer]
        loc.node, loc.op_type, loc.node_basis = node.name, node.op_type, f"input of {first.module}"
        loc.source = frame_of_stack(node.stack_trace)
    else:
        loc.node_basis = None
    loc.source = loc.source or forward_of(module, parent)
    if loc.inherited_value in graph.graph_inputs:
        loc.notes.append(f"{first.module} reads the graph input {loc.inherited_value} directly in ONNX, while eager "
                         f"computed its input first: ops of {loc.class_name}.forward before it are missing from the "
                         "graph (a branch or an in-place update the export did not record)")


def _in_root(loc: Localization, graph: GraphMap, module: Any, final: Point | None) -> None:
    """Every submodule agrees but the output does not: the root forward's own ops are the cause."""
    if final is None or not final.diverges:
        loc.status, loc.summary = "no-divergence", "no module and no output departs from the source at this sample"
        return
    loc.status, loc.module, loc.class_name = "in-root", "", type(module).__name__
    loc.origin = "local"
    own = graph.own_nodes("")
    producer = graph.producer.get(final.value or "")
    node = graph.nodes[producer] if producer is not None else (own[-1] if own else None)
    if node is not None:
        loc.node, loc.op_type, loc.node_basis = node.name, node.op_type, "module output"
        loc.source = frame_of_stack(node.stack_trace)
    loc.source = loc.source or forward_of(module, "")
    loc.branch_lines = branch_lines(module)
    agree = f"all {loc.compared_modules} submodule outputs agree" if loc.compared_modules else "no submodule compared"
    loc.origin_detail = f"{agree}; the output differs ({final.max_abs_diff:.3g}): the root forward's own ops"
    loc.summary = summary_line(loc)


__all__ = ["Localization", "Point", "localize", "compare_point"]
