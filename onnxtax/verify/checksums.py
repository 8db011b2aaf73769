"""`onnxtax verify`: the signature first (with a key: verify.signature), then every file the manifest
lists, recomputed, inside the artifact's folder, then the provenance the manifest records.

A listed path that leaves the artifact's folder (`../`, absolute, a symlink out) is never read
and fails; files beside the artifact named like its data but not listed are reported (and fail
a signed artifact's check: the signature does not cover them).

VerifyReport.to_dict():
{"model": "...", "manifest": "...", "passed": true, "files": [{"file", "expected_sha256", "actual_sha256",
 "status": "ok" | "changed" | "missing" | "outside"}], "extra": ["..."],
 "require_signature": false, "signature": null | {verify.signature.SignatureCheck},
 "provenance": null | {"file": "...", "statement": {in-toto statement} | null, "problem": null | "...",
                       "gates": [verify.attest.gates_of]},
 "memory": {...}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from onnxtax.core.errors import ManifestError, OnnxtaxError
from onnxtax.core.files import sha256_file
from onnxtax.core.manifest import manifest_path_for, read_manifest, signature_path_for
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
    signature: Any = None  # onnxtax.verify.signature.SignatureCheck, when asked for or present
    require_signature: bool = False
    provenance: dict | None = None  # {"file", "statement", "problem", "gates"} when the manifest records one

    @property
    def passed(self) -> bool:
        if not all(f.status == "ok" for f in self.files):
            return False
        if self.provenance is not None and self.provenance.get("problem"):
            return False
        if self.signature is None:
            return not self.require_signature
        if self.require_signature:
            return self.signature.status == "verified"
        return self.signature.passed

    @property
    def signature_problems(self) -> list[str]:
        """Why the signature or the provenance failed (not the checksums)."""
        out = []
        sig = self.signature
        if sig is not None and (not sig.passed or (self.require_signature and sig.status != "verified")):
            out.append(sig.reason if sig.status == "failed" else f"unsigned: {sig.reason} (--require-signature)")
        elif sig is None and self.require_signature:
            out.append("the signature was required but not checked")
        if self.provenance is not None and self.provenance.get("problem"):
            out.append(self.provenance["problem"])
        return out

    @property
    def problems(self) -> list[str]:
        """Why it failed, one phrase each: the signature first, then each file, then the provenance."""
        says = {"missing": "is missing", "changed": "differs from the manifest",
                "outside": "is outside the artifact's folder (not read)"}
        sig = self.signature_problems
        provenance = [sig.pop()] if self.provenance is not None and self.provenance.get("problem") else []
        return sig + [f"{f.file} {says[f.status]}" for f in self.files if f.status != "ok"] + provenance

    def to_dict(self) -> dict:
        return {"model": self.model, "manifest": self.manifest, "passed": self.passed,
                "files": [f.__dict__ for f in self.files], "extra": self.extra,
                "require_signature": self.require_signature,
                "signature": self.signature.to_dict() if self.signature is not None else None,
                "provenance": self.provenance,
                "memory": self.memory.to_dict() if self.memory else None}


def verify_artifact(model_path: str | Path, *, key: str | Path | None = None,
                    require_signature: bool = False) -> VerifyReport:
    """Check the signature with `key` (a public key; None: only say whether it is signed), then
    recompute every checksum the manifest lists, then read the provenance it records. A listed
    path that leaves the artifact's folder (`../`, absolute, a symlink out) is never read and
    fails. `require_signature`: an unsigned artifact fails (needs `key`: a signature that was not
    checked never passes)."""
    model_path = Path(model_path)
    if require_signature and key is None:
        raise ManifestError("a required signature needs the public key to check it",
                            "give --key PUBLIC.pem (the public half of the signing key)")
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
    report = VerifyReport(str(model_path), str(manifest_path_for(model_path)), require_signature=require_signature)
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
    signed = isinstance(data.get("signature"), dict) or signature_path_for(model_path).exists()
    if key is not None or signed:
        from onnxtax.verify.signature import check_signature

        report.signature = check_signature(model_path, data, key, data_like=report.extra)
    if isinstance(data.get("provenance"), dict):
        report.provenance = _provenance(model_path, data)
    report.memory = meter.record()
    return report


def _provenance(model_path: Path, manifest: dict) -> dict:
    """The statement the manifest records: inside the folder, its sha256 the manifest's, about these bytes."""
    from onnxtax.verify.attest import gates_of, read_statement, subject_mismatches

    name = manifest["provenance"].get("file")
    out: dict = {"file": name, "statement": None, "problem": None, "gates": []}
    path = model_path.parent / str(name)
    if not isinstance(name, str) or not _inside(path, model_path.parent.resolve()) or path.is_symlink():
        out["problem"] = f"the manifest names provenance {name!r} outside the artifact's folder (not read)"
    elif not path.is_file():
        out["problem"] = f"provenance {name} is missing"
    elif sha256_file(path) != manifest["provenance"].get("sha256"):
        out["problem"] = f"provenance {name} differs from the manifest"
    else:
        try:
            statement = read_statement(path)
        except OnnxtaxError as exc:
            out["problem"] = exc.message
        else:
            mismatch = subject_mismatches(statement, manifest, model_path.name)
            out["statement"], out["gates"] = statement, gates_of(statement)
            if mismatch:
                out["problem"] = f"provenance {name} describes other bytes: {mismatch[0]}"
    return out


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
    siblings = [p.name for p in model_path.parent.glob("*.onnx") if p.name != model_path.name]
    return sorted(p.name for p in model_path.parent.iterdir()
                  if p.is_file() and p.name not in own
                  and not any(p.name.startswith(other) for other in siblings)  # m.int8.onnx.data is m.int8's
                  and (p.name.startswith(model_path.name)
                       or (p.name.startswith(stem + ".") and p.name.endswith(DATA_SUFFIXES))))
