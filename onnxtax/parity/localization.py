"""Where an ONNX artifact first departs from its eager PyTorch source, on one provider.

Parity says an output is wrong; this says which module, then which op, made it wrong. For one
failing case (provider x shape x sample) it runs the eager model with forward hooks and the ONNX
model with the matching intermediate values as extra outputs, on the same provider, and compares
module by module in the order the eager forwards returned (children before their parent). The
first module outside parity's tolerance is the suspect. Its ONNX inputs are compared with eager's
(onnxtax.parity.suspect): all compared and agreeing means the error is made there ("local"); when
some differ, its nodes are run alone on eager's values: still wrong means local, right means it
arrives with the inputs ("inherited", from the parent's own ops). Inside the module that makes it,
the ops are compared one by one (onnxtax.parity.opsearch): the first op whose output departs while
its inputs agree, with the line that calls it. The failing rows and positions come from the case's
output at every sample of its shape, and what the declared inputs of those rows share is stated
only when it separates them from the passing rows (onnxtax.parity.rows).

Memory stays bounded: values are compared in chunks of modules (then of ops) whose outputs fit
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
  "node_basis": "weight" | "op" | "only node" | "module output" | "input of MODULE" | null,  (how it was picked)
  "source": null | {"file", "line", "function", "code", "origin": "user" | "library", "user_frame"},
  "origin": "local" | "inherited" | null, "origin_detail": "<one line>" | null,
  "inputs": [{"eager", "onnx", "shape", "agree": true | false | null, "max_abs_diff", "tolerance_ratio", "how"}],
                                            (the first divergent module's inputs as compared; null: not compared)
  "op": null | {...},                       (the op-level finding: onnxtax.parity.opsearch.OpFinding)
  "first": null | point, "trail": [point, ...],   (the next divergent modules, then the output)
  "rows": null | {"axis": 0, "size": 8, "diverging": [2, 5], "common": "<text>" | null, "sample": 1,
                  "at": [{"row": 2, "positions": [0, 1]}]},
  "positions": null | {"axis": 1, "size": 33, "diverging": [17, ...], "first": 17},
  "shared": [{"level": "rows" | "positions", "input": "attention_mask", "rule": "all 0", "text": "<one line>"}],
                                            (what the failing rows' inputs share; empty: nothing separates them)
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

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from onnxtax.parity.explain import summary_line
from onnxtax.parity.intermediates import EagerCapture, GraphMap, SourceLine, branch_lines, forward_of, line_text
from onnxtax.parity.opsearch import OpFinding, locate_op
from onnxtax.parity.points import InputCheck, Point, best_match, compare_point
from onnxtax.parity.rows import Failing, failing_units, rows_and_positions, shared_by_failing
from onnxtax.parity.suspect import blame_parent, branch_evidence, in_root, origin_of, pick_node

from onnxtax.core.defaults import LOCALIZE_MEMORY_MB as DEFAULT_MEMORY_BUDGET_MB
from onnxtax.core.defaults import LOCALIZE_TIME_BUDGET_S as DEFAULT_TIME_BUDGET_S
_TRAIL = 6



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
    inputs: list[InputCheck] = field(default_factory=list)  # the first divergent module's inputs, as compared
    op: OpFinding | None = None  # the op inside the module that makes the difference
    first: Point | None = None
    trail: list[Point] = field(default_factory=list)
    rows: dict | None = None
    positions: dict | None = None
    shared: list[dict] = field(default_factory=list)  # what the failing rows' inputs share (only when it separates)
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
                "inputs": [c.to_dict() for c in self.inputs], "op": self.op.to_dict() if self.op else None,
                "first": self.first.to_dict() if self.first else None,
                "trail": [p.to_dict() for p in self.trail], "rows": self.rows, "positions": self.positions,
                "shared": [dict(s) for s in self.shared],
                "weights": list(self.weights), "graph_only_modules": list(self.graph_only_modules),
                "eager_only_modules": list(self.eager_only_modules), "branch_lines": list(self.branch_lines),
                "compared_modules": self.compared_modules, "chunks": self.chunks,
                "peak_chunk_mb": self.peak_chunk_mb, "memory_budget_mb": self.memory_budget_mb,
                "session_weights": self.session_weights, "exporter": self.exporter, "duration_s": self.duration_s, "notes": list(self.notes)}




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
             shared_weights: Any = None, evidence: Sequence[tuple[int, dict[str, np.ndarray]]] = ()) -> Localization:
    """Find the first module, then the first op, whose ONNX output departs from eager on `request`'s provider.

    Args:
        module: the eager nn.Module (eval mode). arrays: one sample, by input spec name.
        specs: the input specs in forward() order; mapping: spec name -> ONNX input name.
        request: the ProviderRequest to examine. rtol, atol: parity's tolerance.
        warmup: feeds (by ONNX input name) run first in the same session: a provider keeping
            state from earlier shapes shows its fault only after them.
        shared_weights: parity's onnxtax.core.sharing.SharedWeights of this model and module, or None:
            CPU sessions then take those weights from the module's memory instead of the file.
        evidence: (sample index, arrays) of every sample of the case's shape: the failing rows are read
            from all of them, so what the failing rows share is set against passing rows (default: this
            sample alone).
    Never raises for what it finds: a failure to localise is a status with a reason.
    """
    t0 = time.perf_counter()
    loc = Localization(request.label, request.name, dict(case or {}), memory_budget_mb=memory_budget_mb)
    evidence = list(evidence) or [(int((case or {}).get("sample", 0)), arrays)]
    try:
        _search(loc, _Run(module, GraphMap(onnx_path, shared=shared_weights), specs, mapping, request, rtol, atol,
                          warmup, opt_level, threads, arrays), memory_budget_mb, t0 + time_budget_s, evidence)
    except Exception as exc:  # noqa: BLE001 - ORT/torch errors inside an optional diagnosis
        from onnxtax.core.providers import ort_error_summary

        line, _ = ort_error_summary(exc)
        loc.status, loc.summary = "error", f"localisation could not run: {line}"
    loc.duration_s = time.perf_counter() - t0
    return loc


class _Run:
    """One localised case: the eager model and the graph on one provider, the sample, the tolerance."""

    def __init__(self, module, graph: GraphMap, specs, mapping, request, rtol, atol, warmup, opt_level, threads,
                 arrays):
        self.module, self.graph, self.specs, self.mapping, self.request = module, graph, specs, mapping, request
        self.rtol, self.atol, self.warmup, self.opt_level, self.threads = rtol, atol, warmup, opt_level, threads
        self.arrays = arrays
        self.args = _torch_args(specs, arrays)
        self.feeds = {mapping[n]: arrays[n] for n in mapping}

    def session(self, model_bytes: bytes):
        return self.graph.session(model_bytes, self.request, opt_level=self.opt_level, threads=self.threads)

    def values(self, names: list[str]) -> dict[str, np.ndarray]:
        """The graph run on the sample (after the warm-up shapes) with these values as extra outputs."""
        session = self.session(self.graph.with_outputs(names))
        _warm(session, self.warmup)
        return dict(zip([o.name for o in session.get_outputs()], session.run(None, self.feeds)))

    def alone(self, model_bytes: bytes, fed: dict, output: str) -> np.ndarray:
        return self.session(model_bytes).run([output], fed)[0]


def _search(loc: Localization, run: _Run, budget_mb: float, deadline: float, evidence: list) -> None:
    module, graph, rtol, atol = run.module, run.graph, run.rtol, run.atol
    loc.exporter = graph.exporter
    loc.session_weights = "shared" if graph.shares_with(run.request) else "file"
    loc.notes.append(_weights_note(graph, run.request))
    plan = EagerCapture(module)
    eager_final = plan.run(run.args)

    compared, boundary = [], {}
    for path in plan.order:
        call = plan.calls[path]
        outs = graph.boundary_outputs(path) if call.calls == 1 else []
        if outs and call.output_shapes:
            compared.append(path)
            boundary[path] = outs
    loc.graph_only_modules, loc.eager_only_modules = branch_evidence(graph, plan, module)
    if not compared:
        loc.notes.append("no module's output could be found in the ONNX graph (no exporter scope metadata or "
                         "node names): only the outputs are compared")

    chunks = _chunks(compared, plan, boundary, sum(a.nbytes for a in eager_final), budget_mb)
    loc.compared_modules, loc.chunks = len(compared), len(chunks)
    points: list[Point] = []
    kept: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}  # the first divergent module only
    final_point, final_masks = None, {}
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
        capture.run(run.args)
        got = run.values([v for p in chunk for v in boundary[p]])
        held = sum(a.nbytes for a in got.values()) + sum(a.nbytes for v in capture.outputs.values() for a in v)
        loc.peak_chunk_mb = max(loc.peak_chunk_mb, held / 2**20)
        if ci == 0:
            final_point, final_masks = _final_point(graph, got, eager_final, rtol, atol)
            if final_point is not None and not final_point.diverges:
                loc.status = "not-reproduced"
                loc.summary = (f"the outputs agree with the source when {run.request.name} also returns the "
                               "intermediate values (max ratio {:.3g}): the fault needs a graph the provider optimises "
                               "differently, or state from other runs".format(final_point.tolerance_ratio))
                return
        for path in chunk:
            cls = plan.calls[path].class_name
            cands = {v: got[v] for v in boundary[path] if v in got}
            for eager in capture.outputs.get(path, []):
                match = best_match(path, cls, eager, cands, rtol, atol)
                if match is None:
                    continue
                point, mask = match
                points.append(point)
                if point.diverges and not kept:
                    kept[path] = (eager, mask)
                break  # a module's first tensor output stands for it
        del got, capture

    first = next((p for p in points if p.diverges), None)
    later = [p for p in points if p.diverges and p is not first]
    loc.trail = _trail(first, later) + ([final_point] if final_point is not None else [])
    module_mask = None
    if first is None:
        in_root(loc, graph, module, final_point)
        if loc.status != "in-root":
            return
    else:
        loc.first, loc.module, loc.class_name = first, first.module, first.class_name
        eager_value, module_mask = kept[first.module]
        pick_node(loc, graph, module, first, rtol, atol)
        origin_of(loc, graph, module, first, run.args, eager_value, run.values, run.alone, rtol, atol)
        if loc.origin == "inherited":
            blame_parent(loc, graph, module, first)
        try:
            loc.branch_lines = branch_lines(module.get_submodule(loc.module))
        except AttributeError:
            pass
    witness = None
    if first is not None:
        witness = (first.value, kept[first.module][0])
    elif final_point is not None:
        name = final_point.value
        witness = (name, eager_final[graph.graph_outputs.index(name)])
    _guarded(loc, "op-level search", lambda: _op_level(loc, run, budget_mb, deadline, witness))
    forward = forward_of(module, loc.module)
    if (loc.graph_only_modules or loc.origin == "inherited") and loc.branch_lines and forward is not None and (
            loc.node_basis not in ("weight", "op")):
        # no op was found making it, and the graph and eager took different sides of a branch: read the branch
        line = loc.branch_lines[0]
        loc.source = SourceLine(forward.file, line, forward.function, line_text(forward.file, line), forward.origin)
    _guarded(loc, "rows", lambda: _rows(loc, run, final_masks, module_mask, evidence, deadline))
    if loc.status != "in-root":
        loc.status = "localized"
    loc.summary = summary_line(loc)


def _guarded(loc: Localization, what: str, step: Any) -> None:
    """A later step that fails leaves what the module-level search found, with a note."""
    try:
        step()
    except Exception as exc:  # noqa: BLE001 - ORT/torch errors inside an optional refinement
        from onnxtax.core.providers import ort_error_summary

        loc.notes.append(f"{what} could not run: {ort_error_summary(exc)[0][:200]}")


def _op_level(loc: Localization, run: _Run, budget_mb: float, deadline: float, witness: tuple | None) -> None:
    """The op inside the suspect module that makes the difference, when the comparisons show one."""
    if time.perf_counter() > deadline:
        loc.notes.append("op-level search not run: the time budget ran out")
        return
    loc.op = locate_op(run.graph, run.module, loc.module or "", run.args, run.values, run.rtol, run.atol,
                       budget_mb=budget_mb, deadline=deadline, witness=witness)
    if loc.op.point is not None and loc.op.status in ("made-here", "inputs-unchecked"):
        if loc.node_basis != "weight":  # a differing weight names its node more precisely
            loc.node, loc.op_type, loc.node_basis = loc.op.node, loc.op.op_type, "op"
        loc.source = loc.op.source or loc.source


def _rows(loc: Localization, run: _Run, final_masks: dict, module_mask: np.ndarray | None, evidence: list,
          deadline: float) -> None:
    """The failing rows and positions of the case's output at the localised sample, and what the inputs of
    the failing rows share, over every sample of the shape."""
    graph = run.graph
    output = loc.case.get("output")
    oi = graph.graph_outputs.index(output) if output in graph.graph_outputs else (
        graph.graph_outputs.index(max(final_masks, key=lambda n: final_masks[n][1])) if final_masks else None)
    sample = int(loc.case.get("sample", evidence[0][0]))
    tables: list[Failing] = []
    if oi is not None and len(evidence) > 1 and time.perf_counter() < deadline:
        tables = _failing_over_samples(run, oi, evidence, deadline)
    elif oi is not None and graph.graph_outputs[oi] in final_masks:
        table = failing_units(final_masks[graph.graph_outputs[oi]][0], run.arrays, sample)
        tables = [table] if table is not None else []
    here = next((t for t in tables if t.sample == sample), None)
    if here is None and oi is not None and graph.graph_outputs[oi] in final_masks:
        here = failing_units(final_masks[graph.graph_outputs[oi]][0], run.arrays, sample)
    if here is None and module_mask is not None:  # the output has no batch axis: the module's own rows
        here = failing_units(module_mask, run.arrays, sample)
    if here is None:
        return
    loc.rows, loc.positions = rows_and_positions(here)
    loc.shared = shared_by_failing(tables, run.specs, where=str(loc.case.get("shape") or ""))
    loc.rows["common"] = next((s["text"] for s in loc.shared if s["level"] == "rows"), None)


def _failing_over_samples(run: _Run, oi: int, evidence: list, deadline: float) -> list[Failing]:
    """The element test of one output at every sample of the shape, at parity's scale (the output's RMS
    over those samples); the samples reached before the deadline."""
    from onnxtax.core.compare import rms

    eager = []
    for _, arrays in evidence:
        if time.perf_counter() > deadline:
            break
        eager.append(EagerCapture(run.module).run(_torch_args(run.specs, arrays))[oi])
    scale = rms(eager)
    session = run.session(run.graph.with_outputs([]))
    _warm(session, run.warmup)
    tables = []
    for (k, arrays), expected in zip(evidence, eager):
        got = session.run(None, {run.mapping[n]: arrays[n] for n in run.mapping})[oi]
        _, mask = compare_point("", "", None, got, expected, run.rtol, run.atol, scale=scale)
        table = failing_units(mask, arrays, k) if mask is not None else None
        if table is not None:
            tables.append(table)
    return tables


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


def _final_point(graph: GraphMap, got: dict, eager_final: list[np.ndarray], rtol, atol
                 ) -> tuple[Point | None, dict[str, tuple[np.ndarray | None, float]]]:
    """The worst graph output, and each output's failing-element mask (with its tolerance ratio)."""
    worst, masks = None, {}
    for name, eager in zip(graph.graph_outputs, eager_final):
        if name in got:
            point, mask = compare_point("", "output", name, got[name], eager, rtol, atol)
            point.module = f"output {name}"
            masks[name] = (mask, point.tolerance_ratio)
            if worst is None or point.tolerance_ratio > worst.tolerance_ratio:
                worst = point
    return worst, {n: m for n, m in masks.items() if m[0] is not None}


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



__all__ = ["Localization", "Point", "localize", "compare_point"]
