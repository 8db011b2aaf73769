"""SARIF 2.1.0, the format GitHub code scanning uploads: lint findings (`lint-ops --sarif`) and
parity's localised divergences (`parity --sarif`), merged into one log by `onnxtax ci`.

A finding with a known source location (the user's file:line, from the exporter's
stack-trace metadata or from tracing the PyTorch model) is placed on that file, so the
alert shows on the line that needs changing; the .onnx file is a related location and
the node a logical location. Other findings are placed on the .onnx file. Paths under
`base_dir` are written relative to `%SRCROOT%`, as code scanning expects. The default base
is the repository root ($GITHUB_WORKSPACE in GitHub Actions, else the git checkout holding
the working directory, else the working directory), so a step that runs in a subfolder
still places alerts on the right files. Allowed findings carry an
external suppression, so code scanning lists them as dismissed, not open.

Parity: one result per localised provider on the user's source line, so code scanning shows where
the ONNX model departs from eager in the diff.
"""

from __future__ import annotations


import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from onnxtax.core.version import VERSION as __version__

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


def rule_descriptors(rules: Iterable[Any]) -> list[dict]:
    """SARIF reportingDescriptors for the rule registry (`onnxtax.lint.RULES.values()`)."""
    out = []
    for rule in rules:
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


def _fingerprint(f: Any, model: str) -> str:
    key = "|".join([f.rule, Path(model).name, f.subgraph or "", f.node or "", f.op_type or "",
                    str(f.details.get("provider", ""))])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def finding_to_result(f: Any, model: str, base: Path, rule_index: dict[str, int]) -> dict:
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
        from onnxtax.core.report import jsonable

        result["properties"]["details"] = jsonable(f.details)
    if related:
        result["relatedLocations"] = related
    if f.allowed:
        result["suppressions"] = [{"kind": "external", "status": "accepted",
                                   "justification": "allowed with onnxtax lint-ops --allow"}]
    return result


def lint_sarif(report: Any, *, base_dir: str | Path | None = None) -> dict:
    """SARIF 2.1.0 log of a LintReport (GitHub code scanning)."""
    from onnxtax.lint.findings import RULES

    return report_to_sarif(report, RULES.values(), base_dir=base_dir)


def report_to_sarif(report: Any, rules: Iterable[Any], *, base_dir: str | Path | None = None) -> dict:
    """A LintReport as one SARIF run (valid against the SARIF 2.1.0 JSON schema).

    The report and the rules are taken by their attributes, not imported: the report
    offers `to_sarif()`, so this module must not depend on onnxtax.lint.findings."""

    base = Path(os.path.abspath(base_dir)) if base_dir else default_base_dir()
    rules = rule_descriptors(rules)
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


def merge_sarif(logs: list[dict], automation_id: str = "onnxtax/ci/") -> dict:
    """SARIF logs (one per model, from `onnxtax ci`) -> one log with one run: rules deduplicated by id, results and
    artifacts concatenated with their indexes renumbered, each run's properties kept
    per model."""

    runs = [run for log in logs for run in (log or {}).get("runs", [])]
    driver: dict[str, Any] = {"name": "onnxtax", "version": __version__, "rules": []}
    if runs:
        driver = dict(runs[0].get("tool", {}).get("driver", {}))
    rules: list[dict] = []
    rule_index: dict[str, int] = {}
    artifacts: list[dict] = []
    artifact_index: dict[str, int] = {}
    results: list[dict] = []
    invocations: list[dict] = []
    base_ids: dict[str, Any] = {}
    per_run: list[dict] = []
    for run in runs:
        remap_rule = {}
        for i, rule in enumerate(run.get("tool", {}).get("driver", {}).get("rules", []) or []):
            rid = rule.get("id", f"rule{i}")
            if rid not in rule_index:
                rule_index[rid] = len(rules)
                rules.append(rule)
            remap_rule[i] = rule_index[rid]
        remap_art = {}
        for i, art in enumerate(run.get("artifacts", []) or []):
            key = json.dumps(art.get("location", art), sort_keys=True)
            if key not in artifact_index:
                artifact_index[key] = len(artifacts)
                artifacts.append(art)
            remap_art[i] = artifact_index[key]
        for res in run.get("results", []) or []:
            res = json.loads(json.dumps(res))  # a copy to renumber
            if res.get("ruleIndex") in remap_rule:
                res["ruleIndex"] = remap_rule[res["ruleIndex"]]
            for loc in (res.get("locations") or []) + (res.get("relatedLocations") or []):
                art = loc.get("physicalLocation", {}).get("artifactLocation", {})
                if art.get("index") in remap_art:
                    art["index"] = remap_art[art["index"]]
            results.append(res)
        invocations.extend(run.get("invocations", []) or [])
        base_ids.update(run.get("originalUriBaseIds", {}) or {})
        if run.get("properties"):
            per_run.append(run["properties"])
    driver["rules"] = rules
    merged: dict[str, Any] = {"tool": {"driver": driver}, "automationDetails": {"id": automation_id}}
    if base_ids:
        merged["originalUriBaseIds"] = base_ids
    if invocations:
        merged["invocations"] = invocations
    if artifacts:
        merged["artifacts"] = artifacts
    merged["results"] = results
    if per_run:
        merged["properties"] = {"models": per_run}
    return {"$schema": SARIF_SCHEMA_URI, "version": SARIF_VERSION, "runs": [merged]}


# --------------------------------------------------------------------------- parity


PARITY_RULE = {
    "id": "parity-divergence",
    "name": "ParityDivergence",
    "shortDescription": {"text": "The ONNX model departs from the eager PyTorch model here"},
    "fullDescription": {"text": "onnxtax parity --localize found the first module whose ONNX output differs from "
                                "the eager model's beyond parity's tolerance; the location is the source line of "
                                "the ONNX node that computes it."},
    "help": {"text": "Read the message: local means the module's own ONNX nodes differ given eager's inputs (a "
                     "changed weight, a frozen branch, a provider's kernel); inherited means ops before it differ."},
    "defaultConfiguration": {"level": "error"},
    "properties": {"tags": ["onnx", "parity"]},
}


def parity_sarif(report: Any, *, base_dir: str | Path | None = None) -> dict:
    """One SARIF 2.1.0 run with a result per localised provider, placed on the source line, so code
    scanning shows the divergence in the diff (the .onnx file is a related location)."""
    import hashlib
    import os

    base = Path(os.path.abspath(base_dir)) if base_dir else default_base_dir()

    def artifact(path: str) -> dict:
        return _artifact(path, base)

    results = []
    for pr in report.providers:
        loc = pr.localization
        if loc is None or not loc.found:
            continue
        model_loc = {"physicalLocation": {"artifactLocation": artifact(report.onnx), "region": {"startLine": 1}}}
        location = dict(model_loc)
        if loc.source is not None:
            location = {"physicalLocation": {"artifactLocation": artifact(loc.source.file),
                                             "region": {"startLine": loc.source.line}}}
        if loc.node:
            location["logicalLocations"] = [{"name": loc.node, "kind": "member",
                                             "fullyQualifiedName": f"{Path(report.onnx).name}:{loc.node}"}]
        key = "|".join([pr.request.name, Path(report.onnx).name, loc.module or "", loc.node or ""])
        results.append({
            "ruleId": PARITY_RULE["id"], "ruleIndex": 0, "level": "error",
            "message": {"text": f"{pr.label}: {loc.summary}"},
            "locations": [location],
            "relatedLocations": [dict(model_loc, id=1, message={"text": f"{loc.node or 'output'} in "
                                                                        f"{Path(report.onnx).name}"})],
            "partialFingerprints": {"onnxtaxDivergence/v1": hashlib.sha256(key.encode()).hexdigest()[:32]},
            "properties": {"provider": pr.request.name, "provider_specific": loc.provider_specific,
                           "module": loc.module, "class_name": loc.class_name, "op_type": loc.op_type,
                           "origin": loc.origin, "case": dict(loc.case)},
        })
    return {
        "$schema": SARIF_SCHEMA_URI,
        "version": SARIF_VERSION,
        "runs": [{
            "tool": {"driver": {"name": "onnxtax", "version": __version__, "semanticVersion": __version__,
                                "rules": [PARITY_RULE]}},
            "automationDetails": {"id": f"onnxtax/parity/{Path(report.onnx).stem}/"},
            "originalUriBaseIds": {SRCROOT: {"uri": base.as_uri() + "/"}},
            "invocations": [{"executionSuccessful": True, "properties": {"passed": report.passed}}],
            "results": results,
        }],
    }
