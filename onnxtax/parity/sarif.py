"""SARIF 2.1.0 for parity's localised divergences (`parity --sarif`, merged into ci's lint.sarif):
one result per localised provider on the user's source line, so code scanning shows where the
ONNX model departs from eager in the diff. Lint's findings and the SARIF plumbing are in
onnxtax.lint.sarif."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SARIF_RULE = {
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

    from onnxtax.core.version import VERSION as __version__
    from onnxtax.lint.sarif import SARIF_SCHEMA_URI, SARIF_VERSION, SRCROOT, artifact_location, default_base_dir

    base = Path(os.path.abspath(base_dir)) if base_dir else default_base_dir()

    def artifact(path: str) -> dict:
        return artifact_location(path, base)

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
            "ruleId": SARIF_RULE["id"], "ruleIndex": 0, "level": "error",
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
                                "rules": [SARIF_RULE]}},
            "automationDetails": {"id": f"onnxtax/parity/{Path(report.onnx).stem}/"},
            "originalUriBaseIds": {SRCROOT: {"uri": base.as_uri() + "/"}},
            "invocations": [{"executionSuccessful": True, "properties": {"passed": report.passed}}],
            "results": results,
        }],
    }
