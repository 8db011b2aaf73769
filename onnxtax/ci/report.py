"""The results of one `onnxtax ci` run (per stage, per provider, per model, the whole run) and
the files they are written as.

Reports (write_reports), in one folder:
  <model>.json   every stage's result, the manifest, the provider verdicts, the host
  junit.xml      a testsuite per model: a testcase per stage, per provider x shape x
                 output (parity) and per benchmark gate
  lint.sarif     every model's lint findings (and localised parity divergences) as one SARIF 2.1.0 run
  summary.md     the model x stage table (also appended to $GITHUB_STEP_SUMMARY)
  host.json      the host facts, so runs from several machines can be merged
  ci.json        the whole run (what `onnxtax ci --json` prints)
  running.json   only while a stage runs: {"schema": "onnxtax.ci.running/1", "model", "stage",
                 "started_utc", "pid", "rss_bytes", "available_bytes", "available_source"};
                 left behind by a run that was killed (SIGKILL, e.g. the OOM killer)

Model report schema ("onnxtax.ci.model/1", keys stable):
{
  "schema": "onnxtax.ci.model/1",
  "model": "fraud", "status": "passed" | "failed" | "error" | "not_run", "passed": true,
  "spec": "/abs/fraud_detector.py:FraudDetector", "onnx": "/abs/build/onnx/fraud.onnx",
  "artifact_sha256": "..." | null,
  "stages": {"export" | "lint" | "parity" | "runtimes" | "verify" | "bench" | "serve" | "quantize" | "sign":
             {"status": "passed" | "failed" | "error" | "not_run" | "off", "seconds": 1.2,
              "summary": "one line", "error": null | "...", "hint": null | "...",
              "memory": null | {the stage report's "memory": weights_bytes, peak_rss_bytes, ...},
              "result": null | {the stage's own report: ExportResult / LintReport / ParityReport /
                                RuntimeMatrixReport / VerifyReport / BenchReport / ServeReport / QuantizeReport
                                .to_dict(); sign: {"signed": [SignReport.to_dict()], "checks": [VerifyReport.to_dict()]}}}},
  "signature": {"status": "signed" | "verified" | "not_checked" | "unsigned" | "failed" | "not_run",
                "key_fingerprint": "sha256:..." | null, "file": "fraud.sig" | null,
                "digests": {"fraud.onnx": "...", "fraud.onnx.data": "..."},  (the artifact's bytes, as signed)
                "int8": null | {"file", "key_fingerprint", "digests"}},
                (signed: this run signed it ([sign]) and checked the signature; verified: it came signed and the
                 [verify] key checked it; not_checked: signed, no key configured)
  "providers": [{"provider": "CPUExecutionProvider", "label": "cpu",
                 "verdict": "passed" | "fell_back" | "failed" | "error" | "not_available" | "not_run",
                 "reason": null | "...", "placement": null | {"total_nodes": 3, "on_provider": 3, "fallback": 0,
                                                              "fallback_op_types": {}}}],
  "manifest": null | {the manifest beside the artifact},
  "config": {the model's resolved config},
  "host": {report.host_facts() + "label"},
  "run": {"started_utc": "...", "seconds": 7.1, "config": "/abs/onnxtax.toml"}
}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from onnxtax.ci.config import ModelConfig
from onnxtax.core.errors import EXIT_CHECK_FAILED, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, EXIT_USAGE

MODEL_SCHEMA = "onnxtax.ci.model/1"
RUN_SCHEMA = "onnxtax.ci/1"
STAGES = ("export", "lint", "parity", "runtimes", "verify", "bench", "serve", "quantize", "sign")
# error: a usage problem stopped the stage (exit 2); failed: its check failed (exit 1); off: not configured
StageStatus = Literal["passed", "failed", "error", "not_run", "off"]
ProviderVerdictName = Literal["passed", "fell_back", "failed", "error", "not_available", "not_run"]
STAGE_TITLES = {"export": "export", "lint": "lint-ops", "parity": "parity", "runtimes": "runtimes",
                "verify": "manifest verify", "bench": "bench", "serve": "serve-bench", "quantize": "quantize",
                "sign": "sign"}
# Verdicts of one provider on one model, from best to worst; "passed" and "fell_back" are passes.
VERDICTS = get_args(ProviderVerdictName)
PASSING = ("passed", "fell_back")
REPORT_FILES = ("junit.xml", "lint.sarif", "summary.md", "host.json", "ci.json")
# written before each stage and removed when the run ends: left behind, it names the stage a
# SIGKILL (the OOM killer, exit 137) stopped, which no other report can
RUNNING_FILE, RUNNING_SCHEMA = "running.json", "onnxtax.ci.running/1"
REPORTS_FLAG = "--reports"


@dataclass
class StageResult:
    """One stage of one model. `status` "off": not configured; "not_run": an earlier stage failed."""

    name: str
    status: StageStatus = "not_run"
    seconds: float = 0.0
    summary: str = ""
    error: str | None = None
    hint: str | None = None
    result: Any = None  # the stage's own report object
    traceback: str | None = None  # with debug=True, for "error"

    @property
    def passed(self) -> bool | None:
        return {"passed": True, "failed": False, "error": False}.get(self.status)

    @property
    def memory(self) -> Any:
        """The stage report's onnxtax.core.memory.MemoryRecord, when it ran far enough to have one."""
        return getattr(self.result, "memory", None)

    def to_dict(self) -> dict:
        from onnxtax.core.report import jsonable

        result = self.result.to_dict() if hasattr(self.result, "to_dict") else self.result
        return {"status": self.status, "seconds": round(self.seconds, 3), "summary": self.summary,
                "error": self.error, "hint": self.hint,
                "memory": self.memory.to_dict() if self.memory is not None else None, "result": jsonable(result)}


@dataclass
class ProviderVerdict:
    """What one model got on one provider on this host; the cells of the merged matrix."""

    provider: str
    label: str
    verdict: ProviderVerdictName
    reason: str | None = None
    placement: dict | None = None

    def to_dict(self) -> dict:
        return {"provider": self.provider, "label": self.label, "verdict": self.verdict, "reason": self.reason,
                "placement": self.placement}


@dataclass
class ModelRun:
    name: str
    config: ModelConfig
    stages: dict[str, StageResult] = field(default_factory=dict)
    providers: list[ProviderVerdict] = field(default_factory=list)
    manifest: dict | None = None
    started_utc: str = ""
    seconds: float = 0.0

    @property
    def status(self) -> str:
        states = [s.status for s in self.stages.values()]
        if "error" in states:
            return "error"
        if "failed" in states:
            return "failed"
        if all(s in ("not_run", "off") for s in states):
            return "not_run"
        return "passed"

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def __bool__(self) -> bool:
        return self.passed

    @property
    def artifact_sha256(self) -> str | None:
        return (self.manifest or {}).get("artifact", {}).get("sha256")

    @property
    def signature(self) -> dict:
        """Whether the artifact ends this run signed, by which key, over which bytes (model report "signature")."""
        digests = {}
        artifact = (self.manifest or {}).get("artifact") or {}
        if artifact.get("sha256"):
            digests[artifact.get("file") or self.config.output.name] = artifact["sha256"]
            digests.update({e.get("file"): e.get("sha256") for e in artifact.get("external_data") or []})
        out = {"status": "unsigned", "key_fingerprint": None, "file": None, "digests": digests, "int8": None}
        sign, verify = self.stages.get("sign"), self.stages.get("verify")
        if sign is not None and sign.status != "off":
            if sign.status != "passed" or not isinstance(sign.result, dict):
                out["status"] = "not_run" if sign.status == "not_run" else "failed"
                return out
            signed = sign.result["signed"]
            out.update(status="signed", key_fingerprint=signed[0]["key_fingerprint"],
                       file=Path(signed[0]["signature"]).name)
            if len(signed) > 1:
                out["int8"] = {"file": Path(signed[1]["model"]).name, "key_fingerprint": signed[1]["key_fingerprint"],
                               "digests": {c["file"]: c["sha256"] for c in signed[1]["covers"]
                                           if not c["file"].endswith((".manifest.json", ".provenance.json"))}}
            return out
        check = getattr(verify.result, "signature", None) if verify is not None else None
        if check is not None:
            out.update(status={"verified": "verified", "not_checked": "not_checked", "unsigned": "unsigned"}.get(
                check.status, "failed"), key_fingerprint=check.signed_fingerprint, file=check.file)
        elif verify is not None and verify.status in ("not_run", "error"):
            out["status"] = "not_run"
        return out

    @property
    def peak_stage(self) -> StageResult | None:
        """The stage with the highest peak RSS: what sizes the runner for this model."""
        measured = [s for s in self.stages.values() if s.memory is not None and s.memory.peak_rss_bytes is not None]
        return max(measured, key=lambda s: s.memory.peak_rss_bytes, default=None)

    @property
    def first_problem(self) -> StageResult | None:
        return next((s for s in self.stages.values() if s.status in ("failed", "error")), None)

    def to_dict(self, host: dict | None = None, config_path: str | None = None) -> dict:
        return {
            "schema": MODEL_SCHEMA, "model": self.name, "status": self.status, "passed": self.passed,
            "spec": self.config.spec, "onnx": str(self.config.output), "artifact_sha256": self.artifact_sha256,
            "stages": {name: s.to_dict() for name, s in self.stages.items()},
            "providers": [p.to_dict() for p in self.providers], "signature": self.signature,
            "manifest": self.manifest, "config": self.config.to_dict(), "host": host or {},
            "run": {"started_utc": self.started_utc, "seconds": round(self.seconds, 3), "config": config_path},
        }


@dataclass
class CiReport:
    """One `onnxtax ci` run. Truthy when every selected model passed every stage."""

    config_path: str
    models: list[ModelRun]
    host: dict
    reports_dir: str | None = None
    started_utc: str = ""
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)
    interrupted: bool = False  # stopped by SIGINT (Ctrl-C) or SIGTERM; unfinished models are "not_run"
    signal: str | None = None  # "SIGINT" | "SIGTERM" when interrupted

    @property
    def passed(self) -> bool:
        return bool(self.models) and not self.interrupted and all(m.passed for m in self.models)

    def __bool__(self) -> bool:
        return self.passed

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_SIGTERM if self.signal == "SIGTERM" else EXIT_SIGINT  # as a shell reports them
        if any(m.status == "error" for m in self.models):
            return EXIT_USAGE
        return EXIT_OK if self.passed else EXIT_CHECK_FAILED

    def to_dict(self) -> dict:
        return {
            "schema": RUN_SCHEMA, "passed": self.passed, "exit_code": self.exit_code, "config": self.config_path,
            "reports_dir": self.reports_dir, "interrupted": self.interrupted, "signal": self.signal,
            "started_utc": self.started_utc,
            "seconds": round(self.seconds, 3),
            "counts": {status: sum(1 for m in self.models if m.status == status)
                       for status in ("passed", "failed", "error", "not_run")},
            "models": [m.to_dict(self.host, self.config_path) for m in self.models], "host": self.host,
            "files": self.files,
        }

    # ----------------------------------------------------------------- CI file formats


# --------------------------------------------------------------------------- JUnit


# --------------------------------------------------------------------------- markdown


VERDICT_TEXT = {"passed": "✅ passed", "fell_back": "⚠️ fell back", "failed": "❌ failed", "error": "⛔ error",
                "not_available": "➖ not available", "not_run": "⏭️ not run"}


# --------------------------------------------------------------------------- files
