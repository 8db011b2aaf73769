"""The provenance of a signed artifact: an in-toto Statement v1 with a SLSA provenance v1 predicate,
written beside the artifact as NAME.provenance.json and covered by the artifact's signature (it is
one of the signed files, so it needs no envelope of its own).

Its subject is the artifact's files (.onnx and external data) by sha256. The predicate records
where the artifact came from and which gates it passed:

{
  "_type": "https://in-toto.io/Statement/v1",
  "subject": [{"name": "fraud.onnx", "digest": {"sha256": "..."}},
              {"name": "fraud.onnx.data", "digest": {"sha256": "..."}}],
  "predicateType": "https://slsa.dev/provenance/v1",
  "predicate": {
    "buildDefinition": {
      "buildType": "urn:onnxtax:export:v1",
      "externalParameters": {"spec": "...:FraudDetector", "inputs": [...], "opset": 18, "ir_version": 10,
                             "exporter": {"name": "dynamo", "options": {...}}, "dynamic_axes": {...},
                             "target_runtimes": [...]},
      "internalParameters": {"versions": {torch, onnx, onnxruntime, onnxscript, onnxtax, python: at export},
                             "host": {"hostname", "platform", "machine", "cpu", "cpu_count"}},
      "resolvedDependencies": [
        {"name": "model source", "uri": "file:///abs/fraud_detector.py", "digest": {"sha256": "..."},
         "annotations": {"recorded": "export" | "sign"}},          (recorded: when the digest was taken)
        {"name": "git", "uri": "git+file:///abs/repo", "digest": {"gitCommit": "..."},
         "annotations": {"dirty": false, "path": "examples/fraud_detector.py", "tracked": true}},
        {"name": "fp32 artifact", "uri": "file:fraud.onnx", "digest": {"sha256": "..."}}   (INT8 builds)
      ]},
    "runDetails": {
      "builder": {"id": "urn:onnxtax:ci" | "urn:onnxtax:export" | "urn:onnxtax:sign",
                  "version": {"onnxtax": "...", "model-signing": "..."}},
      "metadata": {"startedOn": "<manifest created_utc>", "finishedOn": "<signed_utc>"},
      "byproducts": [   one per gate that passed
        {"name": "parity", "digest": {"sha256": "<RFC 8785 canonical JSON of the gate's report>"},
         "mediaType": "application/json",
         "annotations": {"verdict": "passed", "report_schema": "onnxtax.parity/2", "onnxtax": "0.1.0",
                         "binding": "run" | "path" | "manifest",
                         "providers": ["cpu", "openvino"], "not_available": [], "shapes": 5, ...}}]}}
}

Gate names and their facts: export (checks), lint (fail_on, errors, warnings, infos, allowed,
targets), parity (providers, not_available, shapes, samples_per_shape, rtol, atol), runtimes
(releases, providers, minimum_passing), quantize (budgets, segments, chosen), bench (gates).
`binding` says how the gate is tied to these bytes: "run" (it ran on this artifact in the
same process: `onnxtax ci`, `export --sign-key`), "path" (a report file naming this artifact's
path: `onnxtax sign --report`), "manifest" (recorded in the signed manifest itself).
Gate reports come in as their JSON dicts, so this module needs no stage.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any

from onnxtax.core.errors import OnnxtaxError
from onnxtax.core.manifest import provenance_path_for  # noqa: F401  (NAME.provenance.json)

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:onnxtax:export:v1"
BUILDERS = ("ci", "export", "sign")
GATES = ("export", "lint", "parity", "runtimes", "quantize", "bench")
BINDINGS = ("run", "path", "manifest")


def report_digest(report: dict) -> str:
    """sha256 of the report's RFC 8785 (JCS) canonical JSON: the same for the report embedded in a
    ci model report and for the file `--json` wrote."""
    import rfc8785

    from onnxtax.core.report import jsonable

    return hashlib.sha256(rfc8785.dumps(_finite(jsonable(report)))).hexdigest()


def _finite(value: Any) -> Any:
    """JSON without NaN or infinities (JCS has neither; the reports write them as strings)."""
    if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def gate_kind(report: dict) -> str | None:
    """Which gate a report (a command's --json) is, from its schema."""
    schema = str(report.get("schema") or "")
    for prefix, kind in (("onnxtax.parity/", "parity"), ("onnxtax.runtimes/", "runtimes"),
                         ("onnxtax.quantize/", "quantize")):
        if schema.startswith(prefix):
            return kind
    if "findings" in report and "fail_on" in report:
        return "lint"
    if "schema_version" in report and "batches" in report:
        return "bench"
    return None


def gate_artifact(kind: str, report: dict) -> str | None:
    """The artifact path a report names (what it checked)."""
    if kind in ("parity", "runtimes"):
        return report.get("onnx")
    if kind == "lint":
        return report.get("model")
    if kind == "quantize":
        return report.get("output")
    if kind == "bench":
        return (report.get("model") or {}).get("onnx")
    return None


def gate_facts(kind: str, report: dict) -> dict:
    """The few facts of a gate that a person asks about ("on which providers, at how many shapes")."""
    if kind == "parity":
        providers = report.get("providers") or []
        tol = report.get("tolerance") or {}
        return {"providers": [p.get("label") for p in providers if p.get("status") == "passed"],
                "not_available": [p.get("label") for p in providers if p.get("status") == "skipped"],
                "shapes": len(report.get("shapes") or []), "samples_per_shape": report.get("samples_per_shape"),
                "rtol": tol.get("rtol"), "atol": tol.get("atol")}
    if kind == "lint":
        summary = report.get("summary") or {}
        return {"fail_on": report.get("fail_on"), "errors": summary.get("error", 0),
                "warnings": summary.get("warning", 0), "infos": summary.get("info", 0),
                "allowed": summary.get("allowed", 0), "targets": report.get("targets") or {}}
    if kind == "runtimes":
        results = report.get("results") or []
        return {"releases": list(report.get("versions") or []),
                "providers": sorted({r.get("label") for r in results if r.get("status") == "passed"}),
                "minimum_passing": report.get("minimum_passing")}
    if kind == "quantize":
        return {"budgets": [budget_text(b) for b in report.get("budgets") or []],
                "segments": [s.get("name") for s in report.get("segments") or []], "chosen": report.get("chosen")}
    if kind == "bench":
        return {"gates": [g.get("message") for g in report.get("gates") or [] if g.get("passed")]}
    if kind == "export":
        return {"checks": [c.get("name") for c in report.get("checks") or [] if c.get("passed")]}
    return {}


def budget_text(b: dict) -> str:
    """{"segment": "tail", "metric": "agreement@0.5", "limit": 0.95, "direction": "min"} -> "tail:agreement@0.5 >= 0.95"."""
    segment = f"{b['segment']}:" if b.get("segment") else ""
    op = ">=" if b.get("direction") == "min" else "<="
    limit = b.get("limit")
    return f"{segment}{b.get('metric')} {op} {limit:g}" if isinstance(limit, (int, float)) else f"{segment}{b.get('metric')}"


def gate_entry(kind: str, report: dict, binding: str) -> dict:
    """One byproduct: the gate's report by digest, its verdict and its facts."""
    if kind not in GATES or binding not in BINDINGS:
        raise ValueError(f"unknown gate {kind!r} or binding {binding!r}")
    versions = report.get("versions") if isinstance(report.get("versions"), dict) else {}
    if binding == "run" and not versions.get("onnxtax"):
        from onnxtax.core.version import VERSION

        versions = {"onnxtax": VERSION}  # it ran in this process
    schema = report.get("schema") or (f"lint/{report['format_version']}" if kind == "lint" else None) or (
        f"bench/{report['schema_version']}" if kind == "bench" else None)
    passed = report.get("passed") is True
    return {"name": kind, "digest": {"sha256": report_digest(report)}, "mediaType": "application/json",
            "annotations": {"verdict": "passed" if passed else "failed", "report_schema": schema,
                            "onnxtax": versions.get("onnxtax"), "binding": binding, **gate_facts(kind, report)}}


def read_gate_report(path: str | Path, model_path: str | Path) -> dict:
    """A gate report file (`--json` of a command) about this artifact, as a byproduct bound by path.
    Exit 2 when it is unreadable, is no gate's report, or names another artifact."""
    from onnxtax.core.paths import same_file

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise OnnxtaxError(f"--report {path} is unreadable: {why}", "give the file a command's --json wrote") from exc
    kind = gate_kind(data) if isinstance(data, dict) else None
    if kind is None:
        raise OnnxtaxError(f"--report {path} is not a gate report", "give the --json of lint-ops, parity, runtimes, "
                           "quantize or bench run on this artifact")
    named = gate_artifact(kind, data)
    if not named or not same_file(named, model_path):
        raise OnnxtaxError(f"--report {path} is the {kind} report of {named or 'no artifact'}, not of {model_path}",
                           f"give the {kind} report of this artifact (run it again on {model_path})")
    return gate_entry(kind, data, "path")


def manifest_gates(manifest: dict) -> list[dict]:
    """The gates the manifest itself records: export's checks, an INT8 build's budgets, the runtime
    matrix the file was run in."""
    version = (manifest.get("versions") or {}).get("onnxtax")
    checks = [c for c in manifest.get("checks") or [] if isinstance(c, dict)]
    out = [gate_entry("export", {"passed": bool(checks) and all(c.get("passed") for c in checks), "checks": checks,
                                 "versions": {"onnxtax": version}}, "manifest")]
    quant = manifest.get("quantization")
    if isinstance(quant, dict):
        out.append(gate_entry("quantize", {"schema": "manifest.quantization", "passed": True,
                                           "budgets": quant.get("budgets") or [],
                                           "segments": quant.get("segments") or [], "versions": {"onnxtax": version},
                                           "chosen": quant.get("label")}, "manifest"))
    matrix = [r for r in manifest.get("runtime_matrix") or [] if isinstance(r, dict)]
    if matrix:
        releases = list(dict.fromkeys(r.get("ort") for r in matrix))
        passed = all(r.get("status") in ("passed", "unavailable") for r in matrix)
        out.append(gate_entry("runtimes", {"schema": "manifest.runtime_matrix", "passed": passed,
                                           "versions": list(releases),
                                           "results": [{"label": r.get("provider"), "status": r.get("status")}
                                                       for r in matrix]}, "manifest"))
        out[-1]["annotations"]["releases"] = releases
    return out


def _host() -> dict:
    from onnxtax.core.report import cpu_name

    import os

    return {"hostname": platform.node(), "platform": platform.platform(), "machine": platform.machine(),
            "cpu": cpu_name(), "cpu_count": os.cpu_count()}


def build_statement(model_path: str | Path, manifest: dict, gates: list[dict], *, builder: str,
                    signed_utc: str, library_version: str | None = None) -> dict:
    """The Statement for an artifact whose checksums were just verified against `manifest`."""
    from onnxtax.core.source import source_record
    from onnxtax.core.version import VERSION

    if builder not in BUILDERS:
        raise ValueError(f"unknown builder {builder!r}")
    model_path = Path(model_path)
    artifact = manifest["artifact"]
    subject = [{"name": model_path.name, "digest": {"sha256": artifact["sha256"]}}]
    subject += [{"name": e["file"], "digest": {"sha256": e["sha256"]}} for e in artifact.get("external_data") or []]
    model = manifest.get("model") or {}
    source, recorded = manifest.get("source"), "export"
    if not isinstance(source, dict):  # exported before sources were recorded: taken now, and said so
        source, recorded = source_record(model.get("source_file")), "sign"
    deps = []
    if source and source.get("sha256"):
        deps.append({"name": "model source", "uri": Path(source["file"]).resolve().as_uri(),
                     "digest": {"sha256": source["sha256"]}, "annotations": {"recorded": recorded}})
    git = (source or {}).get("git")
    if isinstance(git, dict) and git.get("commit"):
        top = Path(source["file"]).resolve()
        for _ in Path(git.get("path") or "").parts:
            top = top.parent
        deps.append({"name": "git", "uri": "git+" + top.as_uri(), "digest": {"gitCommit": git["commit"]},
                     "annotations": {"dirty": git.get("dirty"), "path": git.get("path"),
                                     "tracked": git.get("tracked"), "recorded": recorded}})
    quant_source = (manifest.get("quantization") or {}).get("source")
    if isinstance(quant_source, dict) and quant_source.get("sha256"):
        deps.append({"name": "fp32 artifact", "uri": f"file:{quant_source.get('file')}",
                     "digest": {"sha256": quant_source["sha256"]}})
    exporter = manifest.get("exporter") or {}
    external = {"spec": model.get("spec"), "class_name": model.get("class_name"), "inputs": manifest.get("inputs"),
                "opset": manifest.get("opset"), "ir_version": manifest.get("ir_version"),
                "exporter": {"name": exporter.get("name"), "options": exporter.get("options")},
                "dynamic_axes": manifest.get("dynamic_axes"), "target_runtimes": manifest.get("target_runtimes")}
    version = {"onnxtax": VERSION}
    if library_version:
        version["model-signing"] = library_version
    statement = {
        "_type": STATEMENT_TYPE, "subject": subject, "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {"buildType": BUILD_TYPE, "externalParameters": external,
                                "internalParameters": {"versions": manifest.get("versions"), "host": _host()},
                                "resolvedDependencies": deps},
            "runDetails": {"builder": {"id": f"urn:onnxtax:{builder}", "version": version},
                           "metadata": {"startedOn": manifest.get("created_utc"), "finishedOn": signed_utc},
                           "byproducts": gates},
        },
    }
    problem = conformance_problem(statement)
    if problem:  # a bug here, not the user's: never sign a statement other tools cannot read
        raise ValueError(f"the provenance statement does not conform to in-toto/SLSA provenance v1: {problem}")
    return statement


def conformance_problem(statement: dict) -> str | None:
    """The statement read by the in-toto attestation bindings (`in-toto-attestation`): an in-toto
    Statement v1 that validates, whose predicate parses as SLSA provenance v1 (no unknown field)."""
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    try:
        Statement.copy_from_pb(json_format.ParseDict(statement, statement_pb2.Statement())).validate()
        json_format.ParseDict(statement["predicate"], provenance_pb2.Provenance())
    except (json_format.ParseError, ValueError, KeyError) as exc:
        return str(exc).splitlines()[0][:200]
    return None


def read_statement(path: str | Path) -> dict:
    """A provenance file, its envelope checked (an OnnxtaxError names what is wrong)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OnnxtaxError(f"provenance {path.name} does not parse: {exc}", "sign the artifact again") from exc
    problems = statement_problems(data)
    if problems:
        raise OnnxtaxError(f"provenance {path.name} is not an in-toto statement: {problems[0]}",
                           "sign the artifact again")
    return data


def statement_problems(data: Any) -> list[str]:
    if not isinstance(data, dict):
        return ["not a JSON object"]
    out = []
    if data.get("_type") != STATEMENT_TYPE:
        out.append(f"_type is {data.get('_type')!r}, expected {STATEMENT_TYPE}")
    if data.get("predicateType") != PREDICATE_TYPE:
        out.append(f"predicateType is {data.get('predicateType')!r}, expected {PREDICATE_TYPE}")
    subject = data.get("subject")
    if not isinstance(subject, list) or not subject or not all(
            isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance((s.get("digest") or {}).get("sha256"),
                                                                                 str) for s in subject):
        out.append("subject must be a list of {name, digest: {sha256}}")
    pred = data.get("predicate")
    if not isinstance(pred, dict) or not isinstance((pred.get("runDetails") or {}).get("byproducts", []), list):
        out.append("predicate.runDetails.byproducts must be a list")
    return out


def subject_mismatches(statement: dict, manifest: dict, model_name: str) -> list[str]:
    """Where the statement's subject and the manifest's checksums disagree (the provenance of other bytes)."""
    artifact = manifest.get("artifact") or {}
    want = {model_name: artifact.get("sha256")}
    want.update({e.get("file"): e.get("sha256") for e in artifact.get("external_data") or [] if isinstance(e, dict)})
    got = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    out = [f"{name}: provenance {str(got.get(name))[:12]}, manifest {str(sha)[:12]}"
           for name, sha in want.items() if got.get(name) != sha]
    out += [f"{name}: in the provenance, not in the manifest" for name in got if name not in want]
    return out


def gates_of(statement: dict) -> list[dict]:
    """The gates a statement records, as {"gate", "verdict", "binding", "onnxtax", "facts", "digest"}."""
    out = []
    for b in (statement.get("predicate") or {}).get("runDetails", {}).get("byproducts") or []:
        if not isinstance(b, dict):
            continue
        notes = dict(b.get("annotations") or {})
        out.append({"gate": b.get("name"), "verdict": notes.pop("verdict", None), "binding": notes.pop("binding", None),
                    "onnxtax": notes.pop("onnxtax", None), "schema": notes.pop("report_schema", None),
                    "digest": (b.get("digest") or {}).get("sha256"), "facts": notes})
    return out
