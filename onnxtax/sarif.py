"""SARIF 2.1.0 for lint findings, the format GitHub code scanning uploads.

A finding with a known source location (the user's file:line, from the exporter's
stack-trace metadata or from tracing the PyTorch model) is placed on that file, so the
alert shows on the line that needs changing; the .onnx file is a related location and
the node a logical location. Other findings are placed on the .onnx file. Paths under
`base_dir` are written relative to `%SRCROOT%`, as code scanning expects. The default base
is the repository root ($GITHUB_WORKSPACE in GitHub Actions, else the git checkout holding
the working directory, else the working directory), so a step that runs in a subfolder
still places alerts on the right files. Allowed findings carry an
external suppression, so code scanning lists them as dismissed, not open.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from onnxtax.lint import Finding, LintReport

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
LEVELS = {"error": "error", "warning": "warning", "info": "note"}
SRCROOT = "%SRCROOT%"


def default_base_dir() -> Path:
    """Where code scanning resolves relative paths: the repository root."""
    workspace = os.environ.get("GITHUB_WORKSPACE")
    cwd = Path(os.path.abspath(os.getcwd()))
    if workspace and os.path.isdir(workspace):
        return Path(os.path.abspath(workspace))
    for folder in (cwd, *cwd.parents):
        if (folder / ".git").exists():
            return folder
    return cwd


def _rule_name(rule_id: str) -> str:
    return "".join(part.capitalize() for part in rule_id.split("-"))


def rule_descriptors() -> list[dict]:
    from onnxtax.lint import RULES

    out = []
    for rule in RULES.values():
        tags = ["onnx", "pytorch-source" if rule.id.startswith("source-") else "onnx-graph"]
        out.append({
            "id": rule.id,
            "name": _rule_name(rule.id),
            "shortDescription": {"text": rule.summary},
            "fullDescription": {"text": rule.help},
            "help": {"text": rule.help, "markdown": f"**{rule.summary}**\n\n{rule.help}"},
            "defaultConfiguration": {"level": LEVELS[rule.severity]},
            "properties": {"tags": tags},
        })
    return out


def _artifact(path: str, base: Path) -> dict:
    p = Path(path)
    absolute = Path(os.path.abspath(p))
    try:
        rel = absolute.relative_to(base)
        return {"uri": rel.as_posix(), "uriBaseId": SRCROOT}
    except ValueError:
        return {"uri": absolute.as_uri()}


def _fingerprint(f: "Finding", model: str) -> str:
    key = "|".join([f.rule, Path(model).name, f.subgraph or "", f.node or "", f.op_type or "",
                    str(f.details.get("provider", ""))])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def finding_to_result(f: "Finding", model: str, base: Path, rule_index: dict[str, int]) -> dict:
    text = f.message + (f" Fix: {f.hint}" if f.hint else "")
    model_loc = {"artifactLocation": _artifact(model, base), "region": {"startLine": 1}}
    logical = []
    if f.node:
        logical.append({"name": f.node, "fullyQualifiedName": f"{Path(model).name}:{f.where}",
                        "kind": "function" if f.rule == "custom-op" and f.details.get("function") else "member"})
    location: dict = {}
    related = []
    if f.source_file and f.source_line:
        location["physicalLocation"] = {"artifactLocation": _artifact(f.source_file, base),
                                        "region": {"startLine": f.source_line}}
        related.append({"id": 1, "physicalLocation": model_loc,
                        "message": {"text": f"{f.where or 'model'} in {Path(model).name}"}})
    else:
        location["physicalLocation"] = model_loc
    if logical:
        location["logicalLocations"] = logical
    result: dict = {
        "ruleId": f.rule,
        "ruleIndex": rule_index[f.rule],
        "level": LEVELS[f.severity],
        "message": {"text": text},
        "locations": [location],
        "partialFingerprints": {"onnxtaxFinding/v1": _fingerprint(f, model)},
        "properties": {k: v for k, v in (("severity", f.severity), ("node", f.node), ("op_type", f.op_type),
                                         ("domain", f.domain), ("subgraph", f.subgraph),
                                         ("source_location", f.source_location)) if v is not None},
    }
    if f.details:
        from onnxtax.report import jsonable

        result["properties"]["details"] = jsonable(f.details)
    if related:
        result["relatedLocations"] = related
    if f.allowed:
        result["suppressions"] = [{"kind": "external", "status": "accepted",
                                   "justification": "allowed with onnxtax lint-ops --allow"}]
    return result


def report_to_sarif(report: "LintReport", *, base_dir: str | Path | None = None) -> dict:
    """The whole report as one SARIF run (valid against the SARIF 2.1.0 JSON schema)."""
    from onnxtax import __version__

    base = Path(os.path.abspath(base_dir)) if base_dir else default_base_dir()
    rules = rule_descriptors()
    rule_index = {r["id"]: i for i, r in enumerate(rules)}
    results = [finding_to_result(f, report.model, base, rule_index) for f in report.findings]
    return {
        "$schema": SARIF_SCHEMA_URI,
        "version": SARIF_VERSION,
        "runs": [{
            "tool": {"driver": {"name": "onnxtax", "version": __version__, "semanticVersion": __version__,
                                "rules": rules}},
            "automationDetails": {"id": f"onnxtax/lint-ops/{Path(report.model).stem}/"},
            "originalUriBaseIds": {SRCROOT: {"uri": base.as_uri() + "/"}},
            "invocations": [{"executionSuccessful": True,
                             "properties": {"passed": report.passed, "fail_on": report.fail_on,
                                            "allow": list(report.allow)}}],
            "results": results,
            "properties": {"model": report.model, "summary": report.counts()},
        }],
    }
