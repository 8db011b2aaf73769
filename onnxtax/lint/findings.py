"""The lint vocabulary: rules (stable ids, default severities, help), findings, the
allow list and the report. Everything else in onnxtax.lint produces or renders these."""

from __future__ import annotations

import fnmatch
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from onnxtax.core.errors import ConfigError
from onnxtax.core.report import Verdict

FORMAT_VERSION = 1
SEVERITIES = ("error", "warning", "info")
SEVERITY_RANK = {"error": 3, "warning": 2, "info": 1}


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
    Rule("target-runtime", "error", "Something the target onnxruntime release refuses to load",
         "onnxruntime refuses a model stamped with a higher IR version or opset than it implements, whatever "
         "ops it uses ('Unsupported model IR version: 10, max supported IR version: 9'), and has no kernel for "
         "ops introduced after its opset. `onnxtax export --target-ort VERSION` writes a file that release loads; "
         "`onnxtax runtimes` runs it there."),
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
class LintReport(Verdict):
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
    memory: Any = None  # onnxtax.core.memory.MemoryRecord

    @property
    def failing(self) -> list[Finding]:
        return [f for f in self.findings if not f.allowed and SEVERITY_RANK[f.severity] >= SEVERITY_RANK[self.fail_on]]

    @property
    def allowed(self) -> list[Finding]:
        return [f for f in self.findings if f.allowed]

    @property
    def passed(self) -> bool:
        return not self.failing

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
                "memory": self.memory.to_dict() if self.memory else None,
                "findings": [f.to_dict() for f in self.findings]}


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

