"""The check of an artifact's OpenSSF model signature (NAME.sig), and what signing and checking share:
which files are this artifact's, and model_signing's hashing restricted to them.

The check fails closed: the signature is verified by model_signing with the given public key,
then the files it lists are compared with the artifact's files as they are now (the same list,
plus any file beside the artifact named like its data): a changed byte, a file added or
removed, another key, or a signature that does not parse each fail, naming the file.

SignatureCheck.to_dict() (inside VerifyReport's "signature"):
{"status": "verified" | "unsigned" | "not_checked" | "failed",
 "file": "fraud.sig" | null, "reason": null | "...", "key_fingerprint": "sha256:..." | null (the key given),
 "signed_fingerprint": "sha256:..." | null (the signature's own key), "method": "key" | null,
 "files": [{"file": "fraud.onnx.data", "status": "ok" | "changed" | "added" | "removed" | "not_regular",
            "signed_sha256": "..." | null, "actual_sha256": "..." | null}]}
"""

from __future__ import annotations

import base64
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from onnxtax.core.errors import ManifestError
from onnxtax.core.manifest import manifest_path_for, provenance_path_for, signature_path_for

METHOD = "key"
MAX_SIGNATURE_BYTES = 64 << 20  # a signature lists digests: megabytes at most
INSTALL_HINT = "install the signing extra: pip install 'onnxtax[sign]' (model-signing and pyopenssl)"


def library_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("model-signing")
    except metadata.PackageNotFoundError as exc:
        raise ManifestError("model-signing is not installed", INSTALL_HINT) from exc


def library():
    """model_signing's public API, imported only when a key is used (~0.7 s)."""
    try:
        from model_signing import hashing, signing, verifying
    except ImportError as exc:
        raise ManifestError(f"signing needs model-signing, which does not import here: {exc}", INSTALL_HINT) from exc
    return hashing, signing, verifying


def own_files(model_path: Path, manifest: dict) -> list[str]:
    """The names (relative to the folder) the signature covers: the .onnx, its listed data, the
    manifest, the provenance."""
    names = [model_path.name]
    names += [e["file"] for e in (manifest.get("artifact") or {}).get("external_data") or []]
    names += [manifest_path_for(model_path).name, provenance_path_for(model_path).name]
    return list(dict.fromkeys(names))


def artifact_hashing(folder: Path, names: list[str]):
    """model_signing's file hashing (sha256) over `names` only: the folder may hold other artifacts.
    `hashed` keeps what was hashed, which also says the signature itself verified (model_signing
    hashes only after that)."""
    hashing, _, _ = library()

    class ArtifactFiles(hashing.Config):
        hashed: Any = None

        def hash(self, model_path, *, files_to_hash=None):
            chosen = [folder / n for n in names] if files_to_hash is None else files_to_hash
            self.hashed = super().hash(model_path, files_to_hash=chosen)
            return self.hashed

    return ArtifactFiles().use_file_serialization(hashing_algorithm="sha256", allow_symlinks=False)


@dataclass
class SignedFile:
    file: str
    status: Literal["ok", "changed", "added", "removed", "not_regular"]
    signed_sha256: str | None = None
    actual_sha256: str | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class SignatureCheck:
    """The signature's verdict. `unsigned` and `not_checked` pass unless a signature was required
    (verify_artifact turns them into failures then)."""

    status: Literal["verified", "unsigned", "not_checked", "failed"]
    file: str | None = None
    reason: str | None = None
    key_fingerprint: str | None = None
    signed_fingerprint: str | None = None
    method: str | None = None
    files: list[SignedFile] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status in ("verified", "unsigned", "not_checked")

    def to_dict(self) -> dict:
        return {"status": self.status, "file": self.file, "reason": self.reason,
                "key_fingerprint": self.key_fingerprint, "signed_fingerprint": self.signed_fingerprint,
                "method": self.method, "files": [f.to_dict() for f in self.files]}


def _inside(folder: Path, name: str) -> bool:
    try:
        (folder / name).resolve().relative_to(folder.resolve())
    except (ValueError, OSError):
        return False
    return bool(name) and not Path(name).is_absolute()


def find_signature(model_path: Path, manifest: dict) -> tuple[Path | None, str | None]:
    """(the signature file, a problem): the manifest's record names it, else NAME.sig beside it."""
    record = manifest.get("signature")
    if isinstance(record, dict) and record.get("file") is not None:
        name = record["file"]
        if not isinstance(name, str) or not _inside(model_path.parent, name):
            return None, f"the manifest names signature {name!r}, outside the artifact's folder (not read)"
        return model_path.parent / name, None
    default = signature_path_for(model_path)
    return (default, None) if default.exists() else (None, None)


def _signed_resources(bundle: dict) -> tuple[dict[str, str], str | None]:
    """({file: sha256}, signer key fingerprint) from a bundle's payload, unverified: read only to
    choose which files to hash and to explain a mismatch model_signing found."""
    payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    files = {r["name"]: r["digest"] for r in payload["predicate"]["resources"]}
    hint = ((bundle.get("verificationMaterial") or {}).get("publicKey") or {}).get("hint")
    return files, (f"sha256:{hint}" if hint else None)


def check_signature(model_path: str | Path, manifest: dict, public_key: str | Path | None, *,
                    data_like: list[str] | None = None) -> SignatureCheck:
    """The signature beside the artifact against `public_key` (None: only say whether there is one).
    `data_like`: files beside it named like its data (checksums), which it must cover when present."""
    from onnxtax.verify.keys import fingerprint, load_public_key

    model_path = Path(model_path)
    folder = model_path.parent
    record = manifest.get("signature") if isinstance(manifest.get("signature"), dict) else {}
    given = fingerprint(load_public_key(public_key)) if public_key is not None else None
    check = SignatureCheck("unsigned", key_fingerprint=given, method=record.get("method"),
                           signed_fingerprint=record.get("key_fingerprint"))
    path, problem = find_signature(model_path, manifest)
    if problem:
        check.status, check.reason = "failed", problem
        return check
    if path is None or not path.exists():
        if record:
            check.status, check.file = "failed", record.get("file")
            check.reason = f"the manifest records a signature ({record.get('file')}) that is missing"
        else:
            check.reason = "no signature beside the artifact"
        return check
    check.file = path.name
    if public_key is None:
        check.status, check.reason = "not_checked", "signed; give --key PUBLIC.pem to check the signature"
        return check
    if not path.is_file() or path.is_symlink():
        check.status, check.reason = "failed", f"signature {path.name} is not a regular file (not read)"
        return check
    raw = path.read_bytes()[:MAX_SIGNATURE_BYTES + 1]
    try:
        if len(raw) > MAX_SIGNATURE_BYTES:
            raise ValueError(f"larger than {MAX_SIGNATURE_BYTES >> 20} MiB")
        bundle = json.loads(raw)
        signed, signer = _signed_resources(bundle)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        check.status = "failed"
        check.reason = f"signature {path.name} does not parse (truncated or damaged): {str(exc)[:160] or type(exc).__name__}"
        return check
    check.signed_fingerprint = signer or check.signed_fingerprint
    names = [n for n in signed if _inside(folder, n)]
    outside = [n for n in signed if n not in names]
    current = own_files(model_path, manifest) + list(data_like or [])
    present = []
    for name in dict.fromkeys(names + current):
        p = folder / name
        if p.is_symlink() or (p.exists() and not p.is_file()):
            check.files.append(SignedFile(name, "not_regular", signed.get(name)))
        elif p.is_file() and _inside(folder, name):
            present.append(name)
    _, _, verifying = library()
    hashing_config = artifact_hashing(folder, present)
    with tempfile.TemporaryDirectory(prefix="onnxtax-sig-") as tmp:
        copy = Path(tmp) / path.name  # the bytes read above, so what is verified is what was parsed
        copy.write_bytes(raw)
        try:
            verifying.Config().use_elliptic_key_verifier(public_key=Path(public_key)).set_hashing_config(
                hashing_config).verify(folder, copy)
            error = None
        except Exception as exc:  # model_signing raises ValueError, cryptography's InvalidSignature, parse errors
            error = exc
    if hashing_config.hashed is None:  # the signature itself did not verify: the files were never compared
        check.status = "failed"
        check.reason = _signature_reason(error, path.name, given, check.signed_fingerprint)
        return check
    actual = {rd.identifier: rd.digest.digest_hex for rd in hashing_config.hashed.resource_descriptors()}
    for name in sorted(set(signed) | set(actual)):
        if any(f.file == name for f in check.files):
            continue
        if name not in actual:
            check.files.append(SignedFile(name, "removed", signed[name]))
        elif name not in signed:
            check.files.append(SignedFile(name, "added", None, actual[name]))
        else:
            check.files.append(SignedFile(name, "ok" if signed[name] == actual[name] else "changed", signed[name],
                                          actual[name]))
    bad = [f for f in check.files if f.status != "ok"]
    if error is not None or bad or outside:
        check.status = "failed"
        check.reason = "; ".join([_file_reason(f) for f in bad] + [f"{n} is signed outside the artifact's folder "
                                                                   "(not read)" for n in outside]) or (
            f"model_signing refused the files: {error}")
    else:
        check.status = "verified"
    return check


def _file_reason(f: SignedFile) -> str:
    return {"changed": f"{f.file} changed since signing",
            "added": f"{f.file} was added after signing (named like the artifact's files, not signed)",
            "removed": f"{f.file} was removed after signing",
            "not_regular": f"{f.file} is a symlink or not a regular file (not read)"}[f.status]


def _signature_reason(error: BaseException | None, name: str, given: str | None, signer: str | None) -> str:
    text = str(error or "")
    if "Key mismatch" in text or (signer and given and signer != given):
        return f"signature {name} was made with another key ({signer or 'unknown'}), not the given {given}"
    if type(error).__name__ == "InvalidSignature":
        return f"signature {name} does not match its content with this key (tampered, or another key)"
    return f"signature {name} does not verify: {text[:200] or type(error).__name__}"
