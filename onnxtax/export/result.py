"""What `export_model` did: the checks it ran, what it wrote, and why it stopped."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from onnxtax.core.manifest import manifest_path_for
from onnxtax.core.report import Verdict


@dataclass
class CheckRecord:
    name: str
    passed: bool | None  # None: did not run
    detail: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass
class ExportResult(Verdict):
    """What `export_model` did. Truthy when the model was written."""

    output: str
    spec: str
    exporter: str
    requested_opset: int
    opset: int | None = None
    ir_version: int | None = None
    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    checks: list[CheckRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    hint: str | None = None
    files: list[str] = field(default_factory=list)
    size_bytes: int = 0
    seconds: float = 0.0
    manifest: dict | None = None
    exporter_log: str = ""
    assumed_ranges: dict[str, dict] = field(default_factory=dict)  # axis -> {"min", "max"} torch.export assumed
    domains: dict[str, str] = field(default_factory=dict)  # input -> how the smoke run drew its values
    stage: str = "load"  # the check under way; named in the failure record
    traceback: str = ""  # the failure's full traceback, for --debug (not in to_dict)
    target: Any = None  # ort_compat.OrtLimits of --target-ort
    runtime_matrix: list[dict] = field(default_factory=list)  # releases x providers it was verified on
    memory: Any = None  # onnxtax.core.memory.MemoryRecord
    source_identity: dict | None = None  # onnxtax.core.identity.module_identity of the source (for the manifest)

    @property
    def passed(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return {
            "passed": self.passed, "output": self.output, "spec": self.spec, "exporter": self.exporter,
            "requested_opset": self.requested_opset, "opset": self.opset, "ir_version": self.ir_version,
            "inputs": self.inputs, "outputs": self.outputs, "checks": [c.to_dict() for c in self.checks],
            "warnings": self.warnings, "error": self.error, "hint": self.hint, "files": self.files,
            "size_bytes": self.size_bytes, "seconds": round(self.seconds, 3),
            "assumed_ranges": {k: dict(v) for k, v in self.assumed_ranges.items()}, "domains": dict(self.domains),
            "target_ort": self.target.to_dict() if self.target else None, "runtime_matrix": self.runtime_matrix,
            "manifest": str(manifest_path_for(self.output)) if self.passed else None,
            "memory": self.memory.to_dict() if self.memory else None,
        }
