"""`onnxtax verify`: every file the manifest lists, recomputed, inside the artifact's folder.

A listed path that leaves the artifact's folder (`../`, absolute, a symlink out) is never read
and fails; files beside the artifact named like its data but not listed are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from onnxtax.core.errors import ManifestError
from onnxtax.core.files import sha256_file
from onnxtax.core.manifest import manifest_path_for, read_manifest
from onnxtax.core.memory import StageMeter, onnx_weights_bytes
from onnxtax.core.report import Verdict


@dataclass
class FileCheck:
    file: str
    expected_sha256: str | None
    actual_sha256: str | None
    status: Literal["ok", "changed", "missing", "outside"]  # outside: a path leaving the artifact's folder (not read)


@dataclass
class VerifyReport(Verdict):
    """Passes when every listed file is inside the artifact's folder and matches. `extra`:
    files beside the artifact that look like its data but the manifest does not list
    (reported, not failed: the checksummed model does not reference them)."""

    model: str
    manifest: str
    files: list[FileCheck] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    memory: Any = None  # onnxtax.core.memory.MemoryRecord

    @property
    def passed(self) -> bool:
        return all(f.status == "ok" for f in self.files)

    def to_dict(self) -> dict:
        return {"model": self.model, "manifest": self.manifest, "passed": self.passed,
                "files": [f.__dict__ for f in self.files], "extra": self.extra,
                "memory": self.memory.to_dict() if self.memory else None}


def verify_artifact(model_path: str | Path) -> VerifyReport:
    """Recompute every checksum the manifest lists. A listed path that leaves the
    artifact's folder (`../`, absolute, a symlink out) is never read and fails."""
    model_path = Path(model_path)
    if model_path.is_dir():
        raise ManifestError(f"{model_path} is a folder, not an .onnx file", "give the path of the exported .onnx file")
    if not model_path.exists() and not manifest_path_for(model_path).is_file():
        raise ManifestError(f"model file {model_path} does not exist (nor its manifest)",
                            "give the path of an .onnx file written by `onnxtax export`")
    if model_path.is_file() and not manifest_path_for(model_path).is_file():
        from onnxtax.core.artifact import refuse_not_a_model

        refuse_not_a_model(model_path, ManifestError)  # `verify eval.npz`, `verify m.manifest.json`
    data = read_manifest(model_path)
    assert data is not None
    meter = StageMeter("verify")
    meter.check(onnx_weights_bytes(model_path) if model_path.is_file() else None)
    report = VerifyReport(str(model_path), str(manifest_path_for(model_path)))
    artifact = data["artifact"]
    external = artifact.get("external_data") or [] if isinstance(artifact, dict) else None
    if not isinstance(external, list) or not all(
            isinstance(e, dict) and isinstance(e.get("file"), str) and isinstance(e.get("sha256"), str)
            for e in [artifact] + external):
        raise ManifestError(f"manifest {report.manifest} is malformed: artifact needs a sha256 string and "
                            "external_data a list of {file, sha256, size_bytes}",
                            "re-export the model to write a new one")
    entries = [(model_path.name, model_path, artifact.get("sha256"))]
    folder = model_path.parent.resolve()
    for ext in external:
        entries.append((ext["file"], model_path.parent / ext["file"], ext.get("sha256")))
    for name, path, expected in entries:
        if path != model_path and not _inside(path, folder):
            report.files.append(FileCheck(name, expected, None, "outside"))
        elif not path.is_file():
            report.files.append(FileCheck(name, expected, None, "missing"))
        else:
            actual = sha256_file(path)
            report.files.append(FileCheck(name, expected, actual, "ok" if actual == expected else "changed"))
    report.extra = _look_like_data(model_path, {Path(name).name for name, _, _ in entries})
    report.memory = meter.record()
    return report


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder)
    except ValueError:
        return False
    return True

# what a model's weights beside it are called, after its stem (m.bin, m.weights, ...)
DATA_SUFFIXES = (".data", ".bin", ".weights", ".pb", ".safetensors", ".onnx_data")


def _look_like_data(model_path: Path, listed: set[str]) -> list[str]:
    """Files beside the artifact named like its data (`m.onnx.data`, `m.onnx_data`, `m.bin`, ...),
    not its source (`m.py`) or another artifact of the same model (`m.int8.onnx`)."""
    if not model_path.parent.is_dir():
        return []
    stem = model_path.name[:-5] if model_path.name.endswith(".onnx") else model_path.name
    own = {model_path.name, manifest_path_for(model_path).name} | listed
    return sorted(p.name for p in model_path.parent.iterdir()
                  if p.is_file() and p.name not in own
                  and (p.name.startswith(model_path.name)
                       or (p.name.startswith(stem + ".") and p.name.endswith(DATA_SUFFIXES))))
