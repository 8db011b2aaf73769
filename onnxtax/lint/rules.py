"""The graph rules: each takes the shared LintContext and returns findings. Where the
runtime is involved (can it load this op, this opset, this IR version), ORT itself is asked."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from onnxtax.lint.findings import RULES, Finding
from onnxtax.lint.graph import (CONTROL_FLOW_OPS, STANDARD_DOMAINS, NodeRef, iter_graphs, iter_nodes,
                                node_source_location, subgraphs)
from onnxtax.core.manifest import export_sizes_of
from onnxtax.core.providers import ort_error_summary

SHAPE_OPS = {"Reshape": 1, "Expand": 1, "Tile": 1, "ConstantOfShape": 0}


def finding(rule: str, message: str, ref: NodeRef | None = None, *, severity: str | None = None,
             hint: str = "", node: str | None = None, **details) -> Finding:
    f = Finding(rule, severity or RULES[rule].severity, message, hint, details=details)
    if ref is not None:
        f.node = ref.label
        f.op_type = ref.node.op_type
        f.domain = ref.node.domain or "ai.onnx"
        f.subgraph = ref.subgraph
        f.source_location = node_source_location(ref.node)
    if node is not None:
        f.node = node
    return f


# ----------------------------------------------------------------------------------------- context
@dataclass
class LintContext:
    """What the rules share: the loaded model, shape-inferred value types, the runtime's verdict."""

    path: Path
    model: Any
    inferred: Any = None  # model after onnx shape inference (or the model itself)
    manifest: dict | None = None
    target_opset: int | None = None
    target_ir: int | None = None
    target_ort: Any = None  # ort_compat.OrtLimits of --target-ort
    ort_max_ir: int | None = None
    ort_max_opset: int | None = None
    load_error: str | None = None  # None = the installed ORT loads the model on CPU
    notes: list[str] = field(default_factory=list)

    @property
    def default_opset(self) -> int | None:
        for imp in self.model.opset_import:
            if imp.domain in ("", "ai.onnx"):
                return imp.version
        return None

    @property
    def function_keys(self) -> set[tuple[str, str]]:
        return {(fn.domain, fn.name) for fn in self.model.functions}


# ----------------------------------------------------------------------------------------- rules
def rule_ir_version(ctx: LintContext) -> list[Finding]:
    out = []
    ir = ctx.model.ir_version
    fix = ("lower it: `m = onnx.load(p); m.ir_version = {v}; onnx.save(m, p)` (valid when the opset is one that "
           "IR {v} runtimes load), or export with a matching onnx version")
    if ctx.target_ir is not None and ir > ctx.target_ir:
        out.append(finding("ir-version", f"model IR version {ir} is above the target IR version {ctx.target_ir}",
                            hint=fix.format(v=ctx.target_ir), ir_version=ir, limit=ctx.target_ir, limit_from="target"))
    if ctx.ort_max_ir is not None and ir > ctx.ort_max_ir:
        out.append(finding("ir-version", f"model IR version {ir} is above what the installed ONNX Runtime loads "
                            f"(max {ctx.ort_max_ir}): it refuses the model",
                            hint=fix.format(v=ctx.ort_max_ir), ir_version=ir, limit=ctx.ort_max_ir,
                            limit_from="onnxruntime"))
    return out


def rule_opset(ctx: LintContext) -> list[Finding]:
    import onnx.defs

    out: list[Finding] = []
    opset = ctx.default_opset
    if opset is None:
        out.append(finding("opset", "the model imports no default-domain (ai.onnx) opset",
                            hint="re-export the model; every ONNX model needs an ai.onnx opset import"))
        return out
    if ctx.target_opset is not None and opset > ctx.target_opset:
        out.append(finding("opset", f"model opset {opset} is above the target opset {ctx.target_opset}",
                            hint=f"export with --opset {ctx.target_opset} (`onnxtax export` fails instead of "
                                 f"silently keeping another opset)", opset=opset, limit=ctx.target_opset,
                            limit_from="target"))
    if ctx.ort_max_opset is not None and opset > ctx.ort_max_opset:
        out.append(finding("opset", f"model opset {opset} is above what the installed ONNX Runtime supports "
                            f"(ai.onnx up to {ctx.ort_max_opset})",
                            hint=f"export with --opset {ctx.ort_max_opset} or lower, or upgrade onnxruntime",
                            opset=opset, limit=ctx.ort_max_opset, limit_from="onnxruntime"))
    if ctx.target_opset is None or opset <= ctx.target_opset:
        return out
    # Per op: which ones changed after the target, and which do not exist there at all.
    by_op: dict[str, list[NodeRef]] = defaultdict(list)
    for ref in iter_nodes(ctx.model):
        if ref.node.domain in ("", "ai.onnx"):
            by_op[ref.node.op_type].append(ref)
    for op, refs in sorted(by_op.items()):
        try:
            since = onnx.defs.get_schema(op, opset, "").since_version
        except Exception:  # noqa: BLE001 - unknown op: runtime-load/custom probes report it
            continue
        if since <= ctx.target_opset:
            continue
        try:
            older = onnx.defs.get_schema(op, ctx.target_opset, "").since_version
        except Exception:  # noqa: BLE001
            older = None
        names = [r.label for r in refs]
        listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        if older is None:
            msg = (f"{op} exists only since opset {since}: not available at target opset {ctx.target_opset} "
                   f"({len(refs)} node(s): {listed})")
            hint = f"rewrite {op} with ops available at opset {ctx.target_opset}, or raise the target"
        else:
            msg = (f"{op} is used in its opset-{since} version, above target opset {ctx.target_opset} "
                   f"(which has the opset-{older} version; {len(refs)} node(s): {listed})")
            hint = f"export with --opset {ctx.target_opset} so the exporter emits the older {op}"
        out.append(finding("opset", msg, refs[0], hint=hint, since_version=since, target_version=older,
                            nodes=names))
    return out


def rule_target_runtime(ctx: LintContext) -> list[Finding]:
    """The static limits table (onnxtax.core.ort_compat) against the model: no install, no session."""
    from onnxtax.core.ort_compat import target_problems

    out = []
    for p in target_problems(ctx.model, ctx.target_ort):
        f = finding("target-runtime", p.message, hint=p.hint, kind=p.kind, ort=ctx.target_ort.series,
                     limit_source=ctx.target_ort.source, nodes=list(p.nodes), since_version=p.since_version)
        if p.op_type:
            f.op_type, f.domain = p.op_type, "ai.onnx"
            f.node = p.nodes[0] if p.nodes else None
        out.append(f)
    return out


def _probe_op(ref: NodeRef, ctx: LintContext) -> str | None:
    """Load a one-node model with this node alone: None if ORT accepts it, else its error."""
    import onnx
    from onnx import helper

    from onnxtax.core.providers import load_error, probe_model

    node = onnx.NodeProto()
    node.CopyFrom(ref.node)
    types = _value_types(ctx)
    inputs = []
    seen = set()
    for name in node.input:
        if not name or name in seen:
            continue
        seen.add(name)
        vi = types.get(name)
        if vi is None or not vi.type.HasField("tensor_type"):
            vi = helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        inputs.append(vi)
    outputs = []
    for name in node.output:
        if name:
            vi = onnx.ValueInfoProto()
            vi.name = name
            outputs.append(vi)
    probe = probe_model(node, inputs=inputs, outputs=outputs,
                        opsets={i.domain: i.version for i in ctx.model.opset_import},
                        ir_version=min(ctx.model.ir_version, ctx.ort_max_ir or ctx.model.ir_version))
    return load_error(probe)


def _value_types(ctx: LintContext) -> dict[str, Any]:
    cache = getattr(ctx, "_types", None)
    if cache is not None:
        return cache
    types: dict[str, Any] = {}
    graph_src = ctx.inferred if ctx.inferred is not None else ctx.model
    for g, _ in iter_graphs(graph_src):
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            types.setdefault(vi.name, vi)
        for t in g.initializer:
            from onnx import helper

            types.setdefault(t.name, helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    ctx._types = types  # type: ignore[attr-defined]
    return types


_NOT_REGISTERED = re.compile(r"is not a registered function/op|Could not find an implementation|"
                             r"No Op registered for|not a registered|No opset import for domain")


def rule_custom_op(ctx: LintContext) -> list[Finding]:
    out: list[Finding] = []
    functions = ctx.function_keys
    custom: dict[tuple[str, str], list[NodeRef]] = defaultdict(list)
    calls: Counter[tuple[str, str]] = Counter()
    for ref in iter_nodes(ctx.model):
        key = (ref.node.domain, ref.node.op_type)
        if key in functions:
            calls[key] += 1
        elif ref.node.domain not in STANDARD_DOMAINS:
            custom[key].append(ref)
    for (domain, name), n in sorted(calls.items()):
        out.append(finding("custom-op", f"{n} call(s) to the model-local function {domain}::{name}: ONNX Runtime "
                            f"inlines it (its body's ops are checked like any other)", severity="info",
                            node=f"{domain}::{name}", function=f"{domain}::{name}", calls=n))
    verdicts: dict[tuple[str, str], str | None] = {}
    for key, refs in custom.items():
        if ctx.load_error is None:
            verdicts[key] = None
        else:
            verdicts[key] = _probe_op(refs[0], ctx)
    for (domain, op), refs in sorted(custom.items()):
        verdict = verdicts[(domain, op)]
        loads = verdict is None
        ms = domain.startswith("com.microsoft")
        for ref in refs:
            if ms and loads:
                msg = (f"{domain}::{op} is an ONNX Runtime contrib op (ORT-only): it loads here, but no other "
                       f"runtime (TensorRT standalone, OpenVINO runtime, TFLite converters) knows it")
                hint = ("fine if the model is only served by ONNX Runtime; otherwise disable the ORT fusion that "
                        "wrote it (save the model before ORT optimisation) or rewrite it with standard ops")
                out.append(finding("custom-op", msg, ref, severity="warning", hint=hint, loads=True, ort_only=True))
            elif loads:
                msg = (f"{domain}::{op} is not a standard ONNX op; the installed ONNX Runtime loads it, so a "
                       f"custom-op library or build provides it: every deployment needs the same one")
                out.append(finding("custom-op", msg, ref, severity="warning", hint=RULES["custom-op"].help,
                                    loads=True, ort_only=False))
            else:
                why = ort_error_summary(verdict)[0] if verdict else ""
                refused = bool(_NOT_REGISTERED.search(verdict or ""))
                msg = (f"{domain}::{op} is not a standard ONNX op and the installed ONNX Runtime "
                       + ("cannot load it" if refused else "rejects it") + (f": {why}" if why else ""))
                hint = ("rewrite it with standard torch ops before export, map it to standard ONNX ops in the "
                        "exporter's custom_translation_table, or register an ORT custom-op library "
                        "(SessionOptions.register_custom_ops_library) wherever the model runs")
                out.append(finding("custom-op", msg, ref, severity="error", hint=hint, loads=False,
                                    ort_only=ms, runtime_error=why))
    return out


def rule_runtime_load(ctx: LintContext, explained: list[Finding]) -> list[Finding]:
    """The runtime's own refusal, when no other rule already says why."""
    if ctx.load_error is None:
        return []
    text = ctx.load_error
    clean, node = ort_error_summary(text)
    if "IR version" in text and any(f.rule == "ir-version" and f.details.get("limit_from") == "onnxruntime"
                                    for f in explained):
        return []
    if re.search(r"opset|Opset", text) and any(f.rule == "opset" and f.details.get("limit_from") == "onnxruntime"
                                               for f in explained):
        return []
    if re.search(r"is not a registered function/op", text) and any(
            f.rule == "custom-op" and f.details.get("loads") is False for f in explained):
        return []
    ref = None
    if node:
        ref = next((r for r in iter_nodes(ctx.model) if r.node.name == node), None)
    return [finding("runtime-load", f"ONNX Runtime refuses the model: {clean}", ref,
                     hint="fix the node it names; `python -c \"import onnx; onnx.checker.check_model('m.onnx', "
                          "full_check=True)\"` may say more", node=None if ref else node, runtime_error=clean)]


def _producers(graph) -> dict[str, Any]:
    return {out: n for n in graph.node for out in n.output if out}


def _describe(value: str, graph, producers, inputs, consts, depth: int = 3) -> tuple[str, set[str], bool]:
    """A compact expression for what computes `value`: (text, graph inputs reached, uses shapes only)."""
    if value in inputs:
        return f"input '{value}'", {value}, False
    if value in consts:
        return "constant", set(), False
    node = producers.get(value)
    if node is None:
        return f"outer-scope '{value}'", set(), False
    if node.op_type == "Constant":
        return "constant", set(), False
    if depth == 0:
        return f"{node.op_type}(…)", set(), False
    parts, reached, shape_only = [], set(), node.op_type in ("Shape", "Size")
    for i in node.input:
        if not i:
            continue
        text, r, s = _describe(i, graph, producers, inputs, consts, depth - 1)
        parts.append(text)
        reached |= r
    if node.op_type in ("Shape", "Size"):
        return f"{node.op_type}({', '.join(parts)})", reached, True
    return f"{node.op_type}({', '.join(parts)})", reached, shape_only


def rule_control_flow(ctx: LintContext) -> list[Finding]:
    out = []
    graph_info: dict[int, tuple] = {}
    for ref in iter_nodes(ctx.model):
        op = ref.node.op_type
        if op not in CONTROL_FLOW_OPS or ref.node.domain not in ("", "ai.onnx"):
            continue
        g = ref.graph
        if id(g) not in graph_info:
            inputs = {vi if isinstance(vi, str) else vi.name for vi in g.input}
            consts = {t.name for t in getattr(g, "initializer", [])}
            graph_info[id(g)] = (_producers(g), inputs, consts)
        producers, inputs, consts = graph_info[id(g)]
        details: dict[str, Any] = {}
        hint = RULES["control-flow"].help
        if op == "If":
            cond = ref.node.input[0] if ref.node.input else ""
            text, reached, _ = _describe(cond, g, producers, inputs, consts)
            shape_only = _shape_only(cond, producers)
            kind = ("constant: fold it away" if text == "constant" else
                    "depends on input shapes only" if shape_only else
                    f"depends on the values of {', '.join(sorted(reached))}" if reached else "data-dependent")
            msg = f"If branches on {text} ({kind})"
            details.update(condition=text, inputs=sorted(reached), shape_only=shape_only)
            hint = ("check parity on every target provider (onnxtax parity --provider ...); if both branches are "
                    "cheap, compute both and select with torch.where to drop the If")
        elif op == "Loop":
            trip = ref.node.input[0] if len(ref.node.input) > 0 else ""
            cond = ref.node.input[1] if len(ref.node.input) > 1 else ""
            trip_text = _describe(trip, g, producers, inputs, consts)[0] if trip else "none"
            cond_text = _describe(cond, g, producers, inputs, consts)[0] if cond else "none"
            msg = f"Loop with trip count {trip_text} and condition {cond_text}"
            details.update(trip_count=trip_text, condition=cond_text)
            hint = ("providers run loops differently (TensorRT runs a Loop one extra iteration, onnxruntime#13894): "
                    "check parity on each provider; a loop with a fixed trip count can be unrolled in PyTorch")
        elif op == "Scan":
            n = next((a.i for a in ref.node.attribute if a.name == "num_scan_inputs"), None)
            msg = f"Scan over {n} scan input(s)"
            details.update(num_scan_inputs=n)
            hint = ("recurrent layers export as Scan/Loop in some exporters; check parity on each provider, or "
                    "export with the LSTM/GRU ops (torch.nn.LSTM exports to ONNX LSTM)")
        else:
            msg = f"{op} runs a subgraph per sequence element"
        out.append(finding("control-flow", msg, ref, hint=hint, **details))
    return out


def _shape_only(value: str, producers, seen: set | None = None) -> bool:
    """True when every path back from `value` ends in Shape/Size or constants (no tensor values)."""
    seen = seen if seen is not None else set()
    if value in seen:
        return True
    seen.add(value)
    node = producers.get(value)
    if node is None:
        return False
    if node.op_type in ("Shape", "Size", "Constant"):
        return True
    ins = [i for i in node.input if i]
    return bool(ins) and all(_shape_only(i, producers, seen) for i in ins)


def rule_float64(ctx: LintContext) -> list[Finding]:
    from onnx import TensorProto

    out = []
    dbl = TensorProto.DOUBLE
    hint = RULES["float64"].help
    g = ctx.model.graph
    for vi in g.input:
        if vi.type.tensor_type.elem_type == dbl:
            out.append(finding("float64", f"graph input '{vi.name}' is float64", hint=hint, node=vi.name,
                                kind="input"))
    for vi in g.output:
        if vi.type.tensor_type.elem_type == dbl:
            out.append(finding("float64", f"graph output '{vi.name}' is float64", hint=hint, node=vi.name,
                                kind="output"))
    for graph, path in iter_graphs(ctx.model):
        doubles = [t.name for t in graph.initializer if t.data_type == dbl]
        if len(doubles) > 10:
            f = finding("float64", f"{len(doubles)} float64 initializers (e.g. {', '.join(doubles[:3])})",
                         hint=hint, node=doubles[0], kind="initializers", names=doubles)
            f.subgraph = path
            out.append(f)
        else:
            for name in doubles:
                f = finding("float64", f"initializer '{name}' is float64", hint=hint, node=name, kind="initializer")
                f.subgraph = path
                out.append(f)
    for ref in iter_nodes(ctx.model):
        node = ref.node
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type == "Cast" and any(a.name == "to" and a.i == dbl for a in node.attribute):
            out.append(finding("float64", f"Cast to float64 ({ref.label})", ref, hint=hint, kind="cast"))
        elif node.op_type == "Constant" and any(a.name == "value" and a.t.data_type == dbl for a in node.attribute):
            out.append(finding("float64", f"float64 Constant ({ref.label})", ref, hint=hint, kind="constant"))
    return out


def _const_values(graph, outer: dict[str, Any]) -> dict[str, Any]:
    """Name -> numpy array for initializers and Constant nodes (inline data only)."""
    from onnx import TensorProto, numpy_helper

    consts = dict(outer)
    for t in graph.initializer:
        if t.data_location == TensorProto.EXTERNAL:
            continue
        try:
            consts[t.name] = numpy_helper.to_array(t)
        except Exception:  # noqa: BLE001 - odd dtypes: not a shape anyway
            pass
    for n in graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                try:
                    if a.name == "value":
                        consts[n.output[0]] = numpy_helper.to_array(a.t)
                    elif a.name == "value_ints":
                        import numpy as np

                        consts[n.output[0]] = np.array(list(a.ints), dtype=np.int64)
                    elif a.name == "value_int":
                        import numpy as np

                        consts[n.output[0]] = np.array(a.i, dtype=np.int64)
                except Exception:  # noqa: BLE001
                    pass
    return consts


def _static_dims(model) -> set[int]:
    out = set()
    for vi in list(model.graph.input) + list(model.graph.output):
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_value"):
                out.add(d.dim_value)
    return out


def rule_baked_shape(ctx: LintContext) -> list[Finding]:
    out: list[Finding] = []
    manifest = ctx.manifest
    if not manifest:
        ctx.notes.append("baked-shape: no manifest beside the model, so the export-time sizes are unknown; "
                         "export with `onnxtax export` to enable the check")
        return out
    hint = RULES["baked-shape"].help
    # 1. inputs/outputs made static although the manifest declares dynamic axes
    declared = {d["name"]: d.get("dims", []) for d in manifest.get("inputs", []) + manifest.get("outputs", [])
                if isinstance(d, dict) and "name" in d}
    for kind, values in (("input", ctx.model.graph.input), ("output", ctx.model.graph.output)):
        for vi in values:
            dims = declared.get(vi.name)
            if not dims:
                continue
            onnx_dims = vi.type.tensor_type.shape.dim
            for axis, (want, have) in enumerate(zip(dims, onnx_dims)):
                if isinstance(want, str) and have.HasField("dim_value"):
                    out.append(finding("baked-shape", f"graph {kind} '{vi.name}' axis {axis} is static "
                                        f"{have.dim_value} but the manifest declares it dynamic ('{want}')",
                                        hint=hint, node=vi.name, kind=kind, axis=axis, symbol=want,
                                        size=have.dim_value))
    # 2. constant shapes holding an export-time size
    sizes = export_sizes_of(manifest)
    ambiguous = _static_dims(ctx.model) | {0, 1}
    wanted = {size: sym for sym, size in sizes.items() if size not in ambiguous and size > 1}
    if not wanted:
        return out
    for graph, path in _graphs_with_consts(ctx.model):
        consts, producers = graph[1], _producers(graph[0])
        for i, node in enumerate(graph[0].node):
            pos = SHAPE_OPS.get(node.op_type)
            if pos is None or node.domain not in ("", "ai.onnx") or len(node.input) <= pos:
                continue
            pieces = _constant_pieces(node.input[pos], consts, producers)
            if not pieces:
                continue
            baked = sorted({int(v) for arr in pieces for v in arr.reshape(-1).tolist() if int(v) in wanted})
            if not baked:
                continue
            if node.op_type == "Reshape" and _static_split(node.input[0], pieces, _value_types(ctx)):
                continue
            shown = [arr.reshape(-1).tolist() for arr in pieces]
            syms = ", ".join(f"{v} = export size of '{wanted[v]}'" for v in baked)
            ref = NodeRef(node, path, graph[0], i)
            what = {"Tile": "repeats", "ConstantOfShape": "shape"}.get(node.op_type, "target shape")
            built = node.input[pos] not in consts
            text = (f"is built by a Concat with the constant piece(s) {shown}" if built else f"is the constant {shown[0]}")
            out.append(finding("baked-shape", f"{node.op_type} {what} {text} ({syms})", ref, hint=hint,
                                values=baked, symbols=[wanted[v] for v in baked]))
    return out


def _static_split(data: str, pieces: list, types: dict) -> bool:
    """True when a Reshape's constant sizes only regroup the data's static dims (e.g. attention's
    unflatten(-1, (3, E)) of a [seq, batch, 3E] tensor): no dynamic axis is absorbed, so a constant
    that equals an export size is a coincidence, not a baked size."""
    vi = types.get(data)
    if vi is None or not vi.type.tensor_type.HasField("shape"):
        return False
    dims = vi.type.tensor_type.shape.dim
    if all(d.HasField("dim_value") for d in dims):
        return False
    static = 1
    for d in dims:
        if d.HasField("dim_value"):
            static *= d.dim_value
    wanted = 1
    for arr in pieces:
        for v in arr.reshape(-1).tolist():
            if int(v) > 0:
                wanted *= int(v)
    return wanted > 0 and static % wanted == 0


def _graphs_with_consts(model) -> Iterator[tuple[tuple[Any, dict], str | None]]:
    def walk(graph, path, outer):
        consts = _const_values(graph, outer)
        yield (graph, consts), path
        for i, node in enumerate(graph.node):
            for sub, sub_path in subgraphs(NodeRef(node, path, graph, i)):
                yield from walk(sub, sub_path, consts)

    yield from walk(model.graph, None, {})


def _constant_pieces(value: str, consts: dict, producers: dict) -> list:
    """The constant array behind a shape input, or the constant parts of a Concat building it."""
    if value in consts:
        return [consts[value]]
    node = producers.get(value)
    if node is not None and node.op_type == "Concat":
        return [consts[i] for i in node.input if i in consts]
    return []


def touches_double(ref: NodeRef, ctx: LintContext) -> bool:
    from onnx import TensorProto

    types = _value_types(ctx)
    for name in list(ref.node.input) + list(ref.node.output):
        vi = types.get(name)
        if vi is not None and vi.type.tensor_type.elem_type == TensorProto.DOUBLE:
            return True
    return any(a.name == "to" and a.i == TensorProto.DOUBLE for a in ref.node.attribute)
