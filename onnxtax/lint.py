"""`onnxtax lint-ops`: what in an ONNX graph (and the PyTorch code behind it) will not
run, or not run the same, where the model is deployed.

`onnx.checker` passes a node in an unknown domain that ONNX Runtime then refuses to
load, and says nothing about opsets a deployment runtime lacks, providers falling back
to CPU, float64 or sizes baked in at export. Each rule here asks the real runtime where
one is involved (ORT sessions, ORT's node placement) instead of keeping op lists.

Rules (stable ids, default severity):
  control-flow       warning  every If/Loop/Scan, nested ones too, and what feeds an If's condition
  custom-op          error    a node outside the standard ONNX domains that the installed ORT cannot load;
                              warning when it loads (com.microsoft contrib ops are ORT-only);
                              info for calls to model-local functions
  opset              error    default-domain opset (or an op's version) above --target-opset or above
                              what the installed ORT loads
  ir-version         error    IR version above --target-ir or above what the installed ORT loads
  runtime-load       error    the installed ORT refuses the model for another reason (message mapped to the node)
  provider-fallback  warning  nodes ORT assigns away from a requested provider; error when it runs none;
                              info for providers not on this host ("not checked here", never guessed)
  float64            warning  double graph inputs, outputs, initializers, constants, casts
  baked-shape        warning  static inputs/outputs where the manifest declares dynamic axes; Reshape/Expand/
                              Tile/ConstantOfShape shapes holding an export-time size
  source-data-dependent-branch  error    (--source) Python control flow on a tensor's value
  source-tensor-to-python       warning  (--source) .item(), int(t), float(t), .tolist(), .numpy()
  source-custom-op              error    (--source) torch.library ops with no ONNX translation;
                                         warning for autograd.Function without symbolic()
  source-trace                  error    (--source) the model could not be traced at all, so no source rule ran

JSON schema of `LintReport.to_dict()` (format_version 1, keys stable):
{
  "format_version": 1,
  "model": "model.onnx",
  "passed": false,                       # nothing at/above fail_on outside --allow
  "fail_on": "error",
  "summary": {"error": 1, "warning": 3, "info": 0, "allowed": 1, "failing": 1,
              "by_rule": {"custom-op": 1, "float64": 3}},
  "model_info": {"ir_version": 10, "opsets": {"": 18, "my.domain": 1}, "producer": "pytorch 2.13",
                 "nodes": 12, "subgraphs": 2, "functions": 0},
  "runtime": {"package": "onnxruntime", "version": "1.31.1", "max_ir_version": 13, "max_opset": 26,
              "loads_model": true, "load_error": null},
  "targets": {"opset": 17, "ir_version": 9},
  "providers": {"checked": [{"provider": "OpenVINOExecutionProvider", "label": "openvino:device_type=CPU",
                             "placement": {...providers.Placement.to_dict()...}}],
                "not_checked": ["cuda"]},
  "source": null | {"spec": "...", "file": "...", "seconds": 1.9, "steps": {"draft_export": "ok", ...}},
  "rules_run": ["control-flow", ...],
  "allow": ["float64", "custom-op:node_3"],
  "notes": ["no manifest beside the model: ..."],
  "seconds": 0.41,
  "findings": [{"rule": "custom-op", "severity": "error", "message": "...", "hint": "...",
                "node": "n1", "op_type": "MyOp", "domain": "my.domain", "subgraph": null,
                "source_location": "model.py:12", "allowed": false, "details": {...}}]
}
`node` is a node name, or a graph input/output/initializer name for value findings.
`subgraph` is the path of nested graphs, e.g. "node_cond__0/then_branch".
"""

from __future__ import annotations

import fnmatch
import os
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from onnxtax.errors import ConfigError, LoadError
from onnxtax.manifest import export_sizes_of
from onnxtax.specs import InputSpec

FORMAT_VERSION = 1
SEVERITIES = ("error", "warning", "info")
_RANK = {"error": 3, "warning": 2, "info": 1}
STANDARD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training", "ai.onnx.preview"}
CONTROL_FLOW_OPS = {"If", "Loop", "Scan", "SequenceMap"}
SHAPE_OPS = {"Reshape": 1, "Expand": 1, "Tile": 1, "ConstantOfShape": 0}
STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str  # default severity
    summary: str
    help: str


RULES: dict[str, Rule] = {r.id: r for r in (
    Rule("control-flow", "warning", "Control flow (If/Loop/Scan) in the graph",
         "ONNX Runtime's CPU provider runs If/Loop/Scan, but accelerator providers partition around them or "
         "run them differently (TensorRT runs a Loop one extra iteration, onnxruntime#13894). Check parity on "
         "every target provider; a data-independent branch or loop can be removed in PyTorch."),
    Rule("custom-op", "error", "Operator outside the standard ONNX domains",
         "onnx.checker passes nodes in unknown domains, ONNX Runtime refuses to load them unless a custom-op "
         "library registers them. com.microsoft contrib ops load only in ONNX Runtime. Rewrite the op with "
         "standard torch ops, give the exporter a translation to standard ONNX ops, or ship the custom-op "
         "library with the model."),
    Rule("opset", "error", "Opset above the deployment target or the installed runtime",
         "A deployment runtime loads models only up to its opset. Export with --opset at or below the "
         "target; ops introduced after the target opset need a rewrite."),
    Rule("ir-version", "error", "IR version above the deployment target or the installed runtime",
         "Older runtimes refuse newer IR versions ('Unsupported model IR version', onnxruntime#20559). "
         "Set model.ir_version to the target (valid when the opset is supported there) or export with an "
         "older onnx."),
    Rule("runtime-load", "error", "ONNX Runtime cannot load the model",
         "The installed ONNX Runtime refused the model for a reason no other rule explains; the message "
         "names the node where ORT does."),
    Rule("provider-fallback", "warning", "Nodes an execution provider does not run",
         "ORT silently assigns nodes a provider lacks to the CPU provider (onnxruntime#26932): data copies "
         "and slow paths. The placement is ORT's own graph assignment on this host."),
    Rule("float64", "warning", "float64 (double) tensors in the graph",
         "Accelerator providers run float64 on CPU or not at all (OpenVINO falls back to CPU). Cast to "
         "float32 in PyTorch (model.float(), torch.float32 constants) before export."),
    Rule("baked-shape", "warning", "Export-time size baked into the graph",
         "A size from the example input frozen into the graph makes the model wrong or failing at other "
         "sizes. Use -1 or x.shape[i] in reshapes, and check with onnxtax parity at several --dim values."),
    Rule("source-data-dependent-branch", "error", "Python branch on a tensor's value",
         "The dynamo exporter fails on it (GuardOnDataDependentSymNode), the TorchScript exporter freezes "
         "the branch taken by the example input. Rewrite with torch.cond (becomes an ONNX If), compute both "
         "sides and select with torch.where, or move the decision out of the model."),
    Rule("source-tensor-to-python", "warning", "Python number taken from a tensor",
         ".item(), int(t), float(t), .tolist() leave the graph: the TorchScript exporter bakes the example's "
         "value as a constant, the dynamo exporter needs it to stay symbolic. Keep the computation in tensors."),
    Rule("source-custom-op", "error", "Custom PyTorch op without an ONNX translation",
         "torch.library custom ops fail the dynamo exporter ('No ONNX function found') unless a "
         "custom_translation_table maps them; autograd.Function needs symbolic() for the TorchScript exporter."),
    Rule("source-trace", "error", "The PyTorch model could not be traced",
         "Neither torch.export nor torch.jit.trace ran the model with the given inputs, so no source rule "
         "checked it (and neither exporter can export it this way). Check that --input (or the manifest's "
         "inputs) matches what forward() expects: order, shapes, dtypes. If it does, fix the error at the "
         "line shown."),
)}


@dataclass
class Finding:
    """One problem: which rule, how bad, where (node, subgraph, user's file:line) and the fix."""

    rule: str
    severity: str
    message: str
    hint: str = ""
    node: str | None = None
    op_type: str | None = None
    domain: str | None = None
    subgraph: str | None = None
    source_location: str | None = None  # "path/to/model.py:12"
    allowed: bool = False
    details: dict = field(default_factory=dict)

    @property
    def source_file(self) -> str | None:
        return self.source_location.rsplit(":", 1)[0] if self.source_location else None

    @property
    def source_line(self) -> int | None:
        if not self.source_location:
            return None
        tail = self.source_location.rsplit(":", 1)[-1]
        return int(tail) if tail.isdigit() else None

    @property
    def where(self) -> str:
        """Node with its subgraph path, for tables."""
        if not self.node:
            return ""
        return f"{self.subgraph}/{self.node}" if self.subgraph else self.node

    def to_dict(self) -> dict:
        return {"rule": self.rule, "severity": self.severity, "message": self.message, "hint": self.hint,
                "node": self.node, "op_type": self.op_type, "domain": self.domain, "subgraph": self.subgraph,
                "source_location": self.source_location, "allowed": self.allowed, "details": dict(self.details)}


@dataclass
class LintReport:
    """All findings for one model. Truthy when nothing at or above `fail_on` is left after --allow."""

    model: str
    fail_on: str = "error"
    findings: list[Finding] = field(default_factory=list)
    model_info: dict = field(default_factory=dict)
    runtime: dict = field(default_factory=dict)
    targets: dict = field(default_factory=dict)
    providers: dict = field(default_factory=lambda: {"checked": [], "not_checked": []})
    source: dict | None = None
    rules_run: list[str] = field(default_factory=list)
    allow: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failing(self) -> list[Finding]:
        return [f for f in self.findings if not f.allowed and _RANK[f.severity] >= _RANK[self.fail_on]]

    @property
    def allowed(self) -> list[Finding]:
        return [f for f in self.findings if f.allowed]

    @property
    def passed(self) -> bool:
        return not self.failing

    def __bool__(self) -> bool:
        return self.passed

    def counts(self) -> dict[str, int]:
        active = [f for f in self.findings if not f.allowed]
        out = {s: sum(1 for f in active if f.severity == s) for s in SEVERITIES}
        out["allowed"] = len(self.allowed)
        out["failing"] = len(self.failing)
        return out

    def to_dict(self) -> dict:
        summary: dict[str, Any] = self.counts()
        summary["by_rule"] = dict(Counter(f.rule for f in self.findings if not f.allowed))
        return {"format_version": FORMAT_VERSION, "model": self.model, "passed": self.passed,
                "fail_on": self.fail_on, "summary": summary, "model_info": self.model_info,
                "runtime": self.runtime, "targets": self.targets, "providers": self.providers,
                "source": self.source, "rules_run": list(self.rules_run), "allow": list(self.allow),
                "notes": list(self.notes), "seconds": round(self.seconds, 3),
                "findings": [f.to_dict() for f in self.findings]}

    def to_sarif(self, *, base_dir: str | Path | None = None) -> dict:
        """SARIF 2.1.0 log (GitHub code scanning): see onnxtax.sarif."""
        from onnxtax.sarif import report_to_sarif

        return report_to_sarif(self, base_dir=base_dir)


# ----------------------------------------------------------------------------------------- allow list


@dataclass(frozen=True)
class AllowEntry:
    rule: str
    node: str | None  # fnmatch pattern; None = the whole rule

    def matches(self, finding: Finding) -> bool:
        if finding.rule != self.rule:
            return False
        if self.node is None:
            return True
        names = [n for n in (finding.node, finding.where) if n]
        return any(fnmatch.fnmatchcase(n, self.node) for n in names)

    def __str__(self) -> str:
        return self.rule if self.node is None else f"{self.rule}:{self.node}"


def parse_allow(entries: list[str] | tuple[str, ...] | None) -> list[AllowEntry]:
    """`RULE` or `RULE:NODE` (NODE may use * and ?). An unknown rule is a usage error."""
    import difflib

    out: list[AllowEntry] = []
    for text in entries or []:
        rule, sep, node = text.strip().partition(":")
        rule = rule.strip()
        if rule not in RULES:
            close = difflib.get_close_matches(rule, list(RULES), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"rules: {', '.join(RULES)}"
            raise ConfigError(f"--allow '{text}': unknown rule '{rule}'", hint)
        if sep and not node.strip():
            raise ConfigError(f"--allow '{text}' has an empty node name", "write RULE or RULE:NODE")
        out.append(AllowEntry(rule, node.strip() if sep else None))
    return out


def check_fail_on(fail_on: str) -> str:
    if fail_on not in ("error", "warning", "info"):
        raise ConfigError(f"--fail-on '{fail_on}' is not a severity", "use error or warning (or info)")
    return fail_on


# ----------------------------------------------------------------------------------------- graph walking


@dataclass
class NodeRef:
    node: Any  # onnx.NodeProto
    subgraph: str | None  # None = main graph
    graph: Any  # the GraphProto (or FunctionProto) holding the node
    index: int

    @property
    def label(self) -> str:
        return self.node.name or f"{self.node.op_type}_{self.index}"


def iter_nodes(model) -> Iterator[NodeRef]:
    """Every node in the main graph, nested subgraphs (If/Loop/Scan bodies) and model-local functions."""

    def walk(graph, path: str | None) -> Iterator[NodeRef]:
        for i, node in enumerate(graph.node):
            ref = NodeRef(node, path, graph, i)
            yield ref
            for attr in node.attribute:
                subs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
                for sub in subs:
                    yield from walk(sub, f"{path}/{ref.label}/{attr.name}" if path else f"{ref.label}/{attr.name}")

    yield from walk(model.graph, None)
    for fn in model.functions:
        yield from walk(fn, f"function {fn.domain}::{fn.name}")


def iter_graphs(model) -> Iterator[tuple[Any, str | None]]:
    """(GraphProto, subgraph path) for the main graph and every nested graph."""
    yield model.graph, None
    for ref in iter_nodes(model):
        for attr in ref.node.attribute:
            subs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
            for sub in subs:
                path = f"{ref.subgraph}/{ref.label}/{attr.name}" if ref.subgraph else f"{ref.label}/{attr.name}"
                yield sub, path


_FRAME = re.compile(r'File "([^"]+)", line (\d+)')
_INTERNAL = re.compile(r"site-packages|dist-packages|[/\\]torch[/\\]|[/\\]onnxscript[/\\]|[/\\]onnxtax[/\\]")


def user_frame(stack_trace: str, prefer_file: str | None = None) -> str | None:
    """The last user frame ('file:line') of a Python stack trace text; frames inside torch,
    generated code (<eval_with_key>) and site-packages are skipped."""
    frames = [(f, int(n)) for f, n in _FRAME.findall(stack_trace or "")]
    if prefer_file:
        want = os.path.realpath(prefer_file)
        mine = [fr for fr in frames if os.path.realpath(fr[0]) == want]
        if mine:
            return f"{mine[-1][0]}:{mine[-1][1]}"
    user = [fr for fr in frames if not fr[0].startswith("<") and not _INTERNAL.search(fr[0])]
    return f"{user[-1][0]}:{user[-1][1]}" if user else None


def node_source_location(node) -> str | None:
    for prop in node.metadata_props:
        if prop.key == STACK_TRACE_KEY:
            return user_frame(prop.value)
    return None


def _finding(rule: str, message: str, ref: NodeRef | None = None, *, severity: str | None = None,
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


def _op_name(node) -> str:
    return f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type


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

    def has_external_data(self) -> bool:
        from onnx import TensorProto

        return any(t.data_location == TensorProto.EXTERNAL for g, _ in iter_graphs(self.model) for t in g.initializer)


def _load_onnx(path: Path):
    import onnx

    if not path.exists():
        raise LoadError(f"model file '{path}' does not exist", "give the path of an .onnx file")
    if not path.is_file():
        raise LoadError(f"'{path}' is not a file", "give the path of an .onnx file")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise LoadError(f"'{path}' is not a readable ONNX model: {type(exc).__name__}: {str(exc)[:200]}",
                        "check the path; an ONNX file is a protobuf written by torch.onnx.export or onnx.save") from exc


def _session_options():
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return so


def _try_load(model_or_path) -> str | None:
    """None if the installed ORT creates a CPU session, else its error text."""
    import onnxruntime as ort

    source = str(model_or_path) if isinstance(model_or_path, (str, Path)) else model_or_path.SerializeToString()
    try:
        ort.InferenceSession(source, _session_options(), providers=["CPUExecutionProvider"])
        return None
    except Exception as exc:  # noqa: BLE001 - ORT raises pybind exception types
        return str(exc).strip() or type(exc).__name__


def _clean_ort_message(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else text
    first = re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*", "", first)
    first = re.sub(r"/\S+\.(?:cc|h|cpp):\d+ .*?\) ", "", first)
    return first.strip()[:400]


def _node_named_in(text: str) -> str | None:
    for pattern in (r'In Node, \("([^"]*)"', r"node with name '([^']+)'", r"in node \(([^)]+)\)",
                    r"[Nn]ode \(([^)]+)\)", r"Node:\s*'?([\w./:-]+)"):
        m = re.search(pattern, text)
        if m and m.group(1):
            return m.group(1)
    return None


# ----------------------------------------------------------------------------------------- rules


def rule_ir_version(ctx: LintContext) -> list[Finding]:
    out = []
    ir = ctx.model.ir_version
    fix = ("lower it: `m = onnx.load(p); m.ir_version = {v}; onnx.save(m, p)` (valid when the opset is one that "
           "IR {v} runtimes load), or export with a matching onnx version")
    if ctx.target_ir is not None and ir > ctx.target_ir:
        out.append(_finding("ir-version", f"model IR version {ir} is above the target IR version {ctx.target_ir}",
                            hint=fix.format(v=ctx.target_ir), ir_version=ir, limit=ctx.target_ir, limit_from="target"))
    if ctx.ort_max_ir is not None and ir > ctx.ort_max_ir:
        out.append(_finding("ir-version", f"model IR version {ir} is above what the installed ONNX Runtime loads "
                            f"(max {ctx.ort_max_ir}): it refuses the model",
                            hint=fix.format(v=ctx.ort_max_ir), ir_version=ir, limit=ctx.ort_max_ir,
                            limit_from="onnxruntime"))
    return out


def rule_opset(ctx: LintContext) -> list[Finding]:
    import onnx.defs

    out: list[Finding] = []
    opset = ctx.default_opset
    if opset is None:
        out.append(_finding("opset", "the model imports no default-domain (ai.onnx) opset",
                            hint="re-export the model; every ONNX model needs an ai.onnx opset import"))
        return out
    if ctx.target_opset is not None and opset > ctx.target_opset:
        out.append(_finding("opset", f"model opset {opset} is above the target opset {ctx.target_opset}",
                            hint=f"export with --opset {ctx.target_opset} (`onnxtax export` fails instead of "
                                 f"silently keeping another opset)", opset=opset, limit=ctx.target_opset,
                            limit_from="target"))
    if ctx.ort_max_opset is not None and opset > ctx.ort_max_opset:
        out.append(_finding("opset", f"model opset {opset} is above what the installed ONNX Runtime supports "
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
        out.append(_finding("opset", msg, refs[0], hint=hint, since_version=since, target_version=older,
                            nodes=names))
    return out


def _probe_op(ref: NodeRef, ctx: LintContext) -> str | None:
    """Load a one-node model with this node alone: None if ORT accepts it, else its error."""
    import onnx
    from onnx import helper

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
    graph = helper.make_graph([node], "probe", inputs, outputs)
    opsets = [helper.make_opsetid(i.domain, i.version) for i in ctx.model.opset_import]
    probe = helper.make_model(graph, opset_imports=opsets)
    probe.ir_version = min(ctx.model.ir_version, ctx.ort_max_ir or ctx.model.ir_version)
    return _try_load(probe)


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
        out.append(_finding("custom-op", f"{n} call(s) to the model-local function {domain}::{name}: ONNX Runtime "
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
                out.append(_finding("custom-op", msg, ref, severity="warning", hint=hint, loads=True, ort_only=True))
            elif loads:
                msg = (f"{domain}::{op} is not a standard ONNX op; the installed ONNX Runtime loads it, so a "
                       f"custom-op library or build provides it: every deployment needs the same one")
                out.append(_finding("custom-op", msg, ref, severity="warning", hint=RULES["custom-op"].help,
                                    loads=True, ort_only=False))
            else:
                why = _clean_ort_message(verdict) if verdict else ""
                refused = bool(_NOT_REGISTERED.search(verdict or ""))
                msg = (f"{domain}::{op} is not a standard ONNX op and the installed ONNX Runtime "
                       + ("cannot load it" if refused else "rejects it") + (f": {why}" if why else ""))
                hint = ("rewrite it with standard torch ops before export, map it to standard ONNX ops in the "
                        "exporter's custom_translation_table, or register an ORT custom-op library "
                        "(SessionOptions.register_custom_ops_library) wherever the model runs")
                out.append(_finding("custom-op", msg, ref, severity="error", hint=hint, loads=False,
                                    ort_only=ms, runtime_error=why))
    return out


def rule_runtime_load(ctx: LintContext, explained: list[Finding]) -> list[Finding]:
    """The runtime's own refusal, when no other rule already says why."""
    if ctx.load_error is None:
        return []
    text = ctx.load_error
    clean = _clean_ort_message(text)
    if "IR version" in text and any(f.rule == "ir-version" and f.details.get("limit_from") == "onnxruntime"
                                    for f in explained):
        return []
    if re.search(r"opset|Opset", text) and any(f.rule == "opset" and f.details.get("limit_from") == "onnxruntime"
                                               for f in explained):
        return []
    if re.search(r"is not a registered function/op", text) and any(
            f.rule == "custom-op" and f.details.get("loads") is False for f in explained):
        return []
    node = _node_named_in(text)
    ref = None
    if node:
        ref = next((r for r in iter_nodes(ctx.model) if r.node.name == node), None)
    return [_finding("runtime-load", f"ONNX Runtime refuses the model: {clean}", ref,
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
        out.append(_finding("control-flow", msg, ref, hint=hint, **details))
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
            out.append(_finding("float64", f"graph input '{vi.name}' is float64", hint=hint, node=vi.name,
                                kind="input"))
    for vi in g.output:
        if vi.type.tensor_type.elem_type == dbl:
            out.append(_finding("float64", f"graph output '{vi.name}' is float64", hint=hint, node=vi.name,
                                kind="output"))
    for graph, path in iter_graphs(ctx.model):
        doubles = [t.name for t in graph.initializer if t.data_type == dbl]
        if len(doubles) > 10:
            f = _finding("float64", f"{len(doubles)} float64 initializers (e.g. {', '.join(doubles[:3])})",
                         hint=hint, node=doubles[0], kind="initializers", names=doubles)
            f.subgraph = path
            out.append(f)
        else:
            for name in doubles:
                f = _finding("float64", f"initializer '{name}' is float64", hint=hint, node=name, kind="initializer")
                f.subgraph = path
                out.append(f)
    for ref in iter_nodes(ctx.model):
        node = ref.node
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type == "Cast" and any(a.name == "to" and a.i == dbl for a in node.attribute):
            out.append(_finding("float64", f"Cast to float64 ({ref.label})", ref, hint=hint, kind="cast"))
        elif node.op_type == "Constant" and any(a.name == "value" and a.t.data_type == dbl for a in node.attribute):
            out.append(_finding("float64", f"float64 Constant ({ref.label})", ref, hint=hint, kind="constant"))
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
                    out.append(_finding("baked-shape", f"graph {kind} '{vi.name}' axis {axis} is static "
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
            out.append(_finding("baked-shape", f"{node.op_type} {what} {text} ({syms})", ref, hint=hint,
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
            label = node.name or f"{node.op_type}_{i}"
            for attr in node.attribute:
                subs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
                for sub in subs:
                    yield from walk(sub, f"{path}/{label}/{attr.name}" if path else f"{label}/{attr.name}", consts)

    yield from walk(model.graph, None, {})


def _constant_pieces(value: str, consts: dict, producers: dict) -> list:
    """The constant array behind a shape input, or the constant parts of a Concat building it."""
    if value in consts:
        return [consts[value]]
    node = producers.get(value)
    if node is not None and node.op_type == "Concat":
        return [consts[i] for i in node.input if i in consts]
    return []


def rule_provider_fallback(ctx: LintContext, providers: list[str], report: LintReport) -> list[Finding]:
    from onnxtax.errors import CheckFailed
    from onnxtax.providers import open_session, placement_of, resolve_providers

    out: list[Finding] = []
    usable, skipped = resolve_providers(providers, skip_unavailable=True)
    for req in skipped:
        report.providers["not_checked"].append(req.label)
        out.append(_finding("provider-fallback", f"{req.label}: not checked here ({req.name} is not available on "
                            f"this host); placement is never guessed", severity="info",
                            hint="run lint-ops on a host with that provider (or in CI there)",
                            provider=req.name, checked=False))
    nodes_by_name = {r.node.name: r for r in iter_nodes(ctx.model) if r.node.name}
    for req in usable:
        try:
            if req.name == "CPUExecutionProvider":
                placement = placement_of(open_session(ctx.path, req), req.name)
            else:
                placement = _isolated_placement(ctx.path, req)
        except _ProviderCrashed as exc:
            report.providers["checked"].append({"provider": req.name, "label": req.label, "placement": None,
                                                "error": str(exc)})
            out.append(_finding("provider-fallback", f"{req.label} crashed the process loading the model: {exc}",
                                severity="error", provider=req.name, checked=True, crashed=True,
                                hint=f"any program that loads this model on {req.short} dies the same way: find "
                                     f"the construct it cannot take (control-flow findings are the usual cause) "
                                     f"and remove it, or serve on a provider that loads the model"))
            continue
        except CheckFailed as exc:
            report.providers["checked"].append({"provider": req.name, "label": req.label, "placement": None,
                                                "error": exc.message})
            flow = sorted({r.node.op_type for r in iter_nodes(ctx.model)
                           if r.node.op_type in CONTROL_FLOW_OPS and r.node.domain in ("", "ai.onnx")})
            if ctx.load_error is not None:
                hint = "the CPU provider refuses the model too: fix the findings above first"
            elif flow:
                hint = (f"the CPU provider loads it, so {req.short} refuses something in the model; it has "
                        f"{'/'.join(flow)} (see control-flow), which providers often cannot take: compute both sides "
                        f"and select with torch.where instead of torch.cond, or serve on a provider that loads it")
            else:
                hint = (f"the CPU provider loads it, so {req.short} refuses something in the model: check the "
                        f"provider options, rewrite the op the message names, or serve on a provider that loads it")
            named = _node_named_in(exc.message)
            ref = nodes_by_name.get(named) if named else None
            out.append(_finding("provider-fallback", f"{req.label} cannot load the model: {exc.message}", ref,
                                severity="error", hint=hint, provider=req.name, checked=True))
            continue
        report.providers["checked"].append({"provider": req.name, "label": req.label,
                                            "placement": placement.to_dict()})
        if placement.method != "ort-graph-assignment":
            out.append(_finding("provider-fallback", f"{req.label}: this ONNX Runtime build does not report node "
                                f"placement; fallback not checked", severity="info", provider=req.name,
                                checked=False))
            continue
        if placement.total_nodes and placement.on_provider == 0 and req.name != "CPUExecutionProvider":
            out.append(_finding("provider-fallback", f"{req.label} runs none of the {placement.total_nodes} nodes: "
                                f"everything runs on {', '.join(placement.by_provider)}", severity="error",
                                hint="check the provider options (e.g. device_type) and that the device exists; "
                                     "OpenVINO with an absent GPU/NPU silently runs everything on CPU",
                                provider=req.name, checked=True, by_provider=placement.by_provider))
        for fb in placement.fallback_nodes:
            ref = nodes_by_name.get(fb["name"])
            cause = ""
            if ref is not None and _touches_double(ref, ctx):
                cause = " (float64)"
            f = _finding("provider-fallback", f"{fb['op_type']} {fb['name']} runs on {fb['provider']} instead of "
                         f"{req.short}{cause}", ref,
                         hint=("cast to float32 in PyTorch before export" if cause else
                               f"{req.short} ran no node at all (see the finding above)" if placement.on_provider == 0
                               else f"{req.short} has no kernel for this op/type here: rewrite it with ops the "
                                    f"provider supports, or accept the CPU copy"),
                         node=None if ref else fb["name"], provider=req.name, ran_on=fb["provider"], checked=True)
            if ref is None:
                f.op_type = fb["op_type"]
            out.append(f)
    return out


class _ProviderCrashed(Exception):
    """The provider killed the process that loaded the model (ORT-OpenVINO aborts on some nested graphs)."""


_PLACEMENT_CHILD = """
import json, sys
from onnxtax.errors import CheckFailed
from onnxtax.providers import open_session, parse_provider, placement_of
req = parse_provider(sys.argv[2])
try:
    out = {"placement": placement_of(open_session(sys.argv[1], req), req.name).to_dict()}
except CheckFailed as exc:
    out = {"error": exc.message, "hint": exc.hint}
print(json.dumps(out))
"""


def _isolated_placement(path: Path, req):
    """ORT's placement on an accelerator provider, read in a child process: a provider that
    aborts on the model (a C++ `terminate`) must not take the whole report down with it."""
    import json
    import subprocess
    import sys

    from onnxtax.errors import CheckFailed
    from onnxtax.providers import Placement

    proc = subprocess.run([sys.executable, "-c", _PLACEMENT_CHILD, str(path), req.label], capture_output=True,
                          text=True, timeout=600)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        import signal

        how = (f"signal {signal.Signals(-proc.returncode).name}" if proc.returncode < 0 else
               f"exit code {proc.returncode}")
        said = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        detail = next((ln for ln in reversed(said) if "what():" in ln or "Error" in ln), said[-1] if said else "")
        detail = re.sub(r"^/\S+:\d+ .*\)( const)? (?=[A-Z])", "", detail.split("what():", 1)[-1].strip())
        raise _ProviderCrashed(f"{how}" + (f": {detail[:300]}" if detail else ""))
    data = json.loads(lines[-1])
    if "error" in data:
        raise CheckFailed(data["error"], data.get("hint"))
    pl = data["placement"]
    return Placement(pl["provider"], total_nodes=pl["total_nodes"], on_provider=pl["on_provider"],
                     by_provider=pl["by_provider"], fallback_op_types=pl["fallback_op_types"],
                     fallback_nodes=pl["fallback_nodes"], method=pl["method"])


def _touches_double(ref: NodeRef, ctx: LintContext) -> bool:
    from onnx import TensorProto

    types = _value_types(ctx)
    for name in list(ref.node.input) + list(ref.node.output):
        vi = types.get(name)
        if vi is not None and vi.type.tensor_type.elem_type == TensorProto.DOUBLE:
            return True
    return any(a.name == "to" and a.i == TensorProto.DOUBLE for a in ref.node.attribute)


# ----------------------------------------------------------------------------------------- entry point

GRAPH_RULES = ("control-flow", "custom-op", "opset", "ir-version", "runtime-load", "float64", "baked-shape")


def lint_model(onnx_path: str | Path, *, source: Any = None, inputs: list[InputSpec] | None = None,
               target_opset: int | None = None, target_ir: int | None = None,
               providers: list[str] | None = None, allow: list[str] | None = None,
               fail_on: str = "error", progress=None) -> LintReport:
    """Lint an ONNX model (and, with `source`, the PyTorch model it came from).

    Args:
        onnx_path: the .onnx file (external data beside it is fine).
        source: a model spec ("file.py:Name") or an nn.Module, for the source rules.
        inputs: forward() inputs for the source rules; default: the manifest's.
        target_opset / target_ir: the deployment runtime's limits.
        providers: provider texts ("openvino:device_type=CPU"); placement checked for those on this host.
        allow: "rule" or "rule:node" (fnmatch) entries that are reported but do not fail.
        fail_on: "error" or "warning".
    Returns:
        LintReport, truthy when nothing at/above fail_on is left.
    """
    from onnxtax.manifest import read_manifest
    from onnxtax.providers import ort_max_ir_version, ort_max_opset, ort_package

    start = time.perf_counter()
    say = progress or (lambda _msg: None)
    check_fail_on(fail_on)
    allow_entries = parse_allow(allow)
    for value, flag in ((target_opset, "--target-opset"), (target_ir, "--target-ir")):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"{flag} {value} is not a positive integer", f"e.g. {flag} 17")
    path = Path(onnx_path)
    model = _load_onnx(path)
    report = LintReport(str(path), fail_on=fail_on, allow=[str(a) for a in allow_entries],
                        targets={"opset": target_opset, "ir_version": target_ir})
    manifest = None
    try:
        manifest = read_manifest(path, required=False)
    except Exception as exc:  # noqa: BLE001 - a broken manifest must not stop the lint
        report.notes.append(f"manifest ignored: {getattr(exc, 'message', exc)}")
    ctx = LintContext(path, model, manifest=manifest, target_opset=target_opset, target_ir=target_ir,
                      ort_max_ir=ort_max_ir_version(), ort_max_opset=ort_max_opset())
    ctx.inferred = _infer(model, ctx)
    say("loading the model in ONNX Runtime")
    ctx.load_error = _try_load(path)
    if ctx.load_error and ctx.ort_max_ir and model.ir_version > ctx.ort_max_ir and not ctx.has_external_data():
        # ORT stops at the IR version; load a copy at its max IR to see what else it would refuse.
        import onnx

        lowered = onnx.ModelProto()
        lowered.CopyFrom(model)
        lowered.ir_version = ctx.ort_max_ir
        second = _try_load(lowered)
        ctx.notes.append("ONNX Runtime refuses the IR version; with the IR version lowered to "
                         f"{ctx.ort_max_ir} it " + ("loads the model" if second is None else
                                                    f"still refuses it: {_clean_ort_message(second)}"))
    dist, ver = ort_package()
    report.runtime = {"package": dist, "version": ver, "max_ir_version": ctx.ort_max_ir,
                      "max_opset": ctx.ort_max_opset, "loads_model": ctx.load_error is None,
                      "load_error": _clean_ort_message(ctx.load_error) if ctx.load_error else None}
    report.model_info = _model_info(model)

    findings: list[Finding] = []
    say("graph rules")
    findings += rule_ir_version(ctx)
    findings += rule_opset(ctx)
    findings += rule_custom_op(ctx)
    findings += rule_runtime_load(ctx, findings)
    findings += rule_control_flow(ctx)
    findings += rule_float64(ctx)
    findings += rule_baked_shape(ctx)
    report.rules_run = list(GRAPH_RULES)
    if providers:
        say("provider placement")
        findings += rule_provider_fallback(ctx, list(providers), report)
        report.rules_run.append("provider-fallback")
    if source is not None:
        from onnxtax.lint_source import SOURCE_RULES, lint_source

        say("tracing the PyTorch model (source rules)")
        src = lint_source(source, inputs, manifest=manifest)
        findings += src.findings
        report.source = src.info
        report.rules_run += list(SOURCE_RULES)
    for f in findings:
        f.allowed = any(a.matches(f) for a in allow_entries)
    findings.sort(key=lambda f: (list(RULES).index(f.rule), -_RANK[f.severity]))
    report.findings = findings
    report.notes += ctx.notes
    report.seconds = time.perf_counter() - start
    return report


def _infer(model, ctx: LintContext):
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as exc:  # noqa: BLE001 - custom ops or >2 GB: rules work without inferred types
        ctx.notes.append(f"shape inference failed ({type(exc).__name__}); value types come from the graph only")
        return None


def _model_info(model) -> dict:
    subgraphs = sum(1 for _, p in iter_graphs(model) if p is not None)
    return {"ir_version": model.ir_version,
            "opsets": {(i.domain or ""): i.version for i in model.opset_import},
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "nodes": sum(1 for _ in iter_nodes(model)), "subgraphs": subgraphs,
            "functions": len(model.functions)}
