"""`onnxtax sign`: an artifact's own files signed with OpenSSF model signing (`model-signing`), with a
private elliptic-curve key, offline; and the check of that signature.

What is signed: the .onnx, the external data files its manifest lists, the manifest and the
provenance statement (verify.attest) - this artifact's files, not the folder's other artifacts.
model_signing hashes them (sha256 per file, the same digests the manifest keeps), puts the list
in an in-toto statement, and signs it in a DSSE envelope inside a Sigstore bundle: NAME.sig.

Order: the provenance is written, then the manifest with its `provenance` and `signature`
records, then the signature over all of them; so the manifest that names the signature is
itself signed. A failure on the way puts the manifest and provenance back as they were.

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
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from onnxtax.core.errors import ManifestError
from onnxtax.core.manifest import manifest_path_for, provenance_path_for, signature_path_for
from onnxtax.core.report import Verdict
from onnxtax.verify.attest import PREDICATE_TYPE

METHOD = "key"
MAX_SIGNATURE_BYTES = 64 << 20  # a signature lists digests: megabytes at most
INSTALL_HINT = "install the signing extra: pip install 'onnxtax[sign]' (model-signing and pyopenssl)"


def library_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("model-signing")
    except metadata.PackageNotFoundError as exc:
        raise ManifestError("model-signing is not installed", INSTALL_HINT) from exc


def _library():
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


def _hashing(folder: Path, names: list[str]):
    """model_signing's file hashing (sha256) over `names` only: the folder may hold other artifacts.
    `hashed` keeps what was hashed, which also says the signature itself verified (model_signing
    hashes only after that)."""
    hashing, _, _ = _library()

    class ArtifactFiles(hashing.Config):
        hashed: Any = None

        def hash(self, model_path, *, files_to_hash=None):
            chosen = [folder / n for n in names] if files_to_hash is None else files_to_hash
            self.hashed = super().hash(model_path, files_to_hash=chosen)
            return self.hashed

    return ArtifactFiles().use_file_serialization(hashing_algorithm="sha256", allow_symlinks=False)


# --------------------------------------------------------------------------- signing


@dataclass
class SignReport(Verdict):
    """One `onnxtax sign`. Passes when the signature was written; `refused` says why nothing was."""

    model: str
    signature: str
    provenance: str
    key_fingerprint: str
    method: str = METHOD
    signed_utc: str = ""
    covers: list[dict] = field(default_factory=list)  # [{"file", "sha256"}]
    gates: list[dict] = field(default_factory=list)  # attest.gates_of(statement)
    refused: str | None = None
    checks: Any = None  # the VerifyReport run before signing

    @property
    def passed(self) -> bool:
        return self.refused is None

    def to_dict(self) -> dict:
        return {"model": self.model, "passed": self.passed, "signature": self.signature,
                "provenance": self.provenance, "method": self.method, "key_fingerprint": self.key_fingerprint,
                "signed_utc": self.signed_utc, "covers": self.covers, "gates": self.gates, "refused": self.refused,
                "checks": self.checks.to_dict() if self.checks is not None else None}


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def sign_artifact(model_path: str | Path, key_path: str | Path, *, gates: list[dict] | None = None,
                  builder: str = "sign") -> SignReport:
    """Verify the artifact's checksums, write its provenance (the manifest's gates and `gates`,
    attest.gate_entry dicts), record the signing in the manifest, and sign every file of it.
    Refused (nothing written, exit 1) when a checksum fails, a data-like file beside it is not
    in the manifest, or a gate did not pass. Key problems raise KeyFileError (exit 2)."""
    from onnxtax.core.files import sha256_file, write_output
    from onnxtax.core.manifest import read_manifest
    from onnxtax.verify.attest import build_statement, gates_of, manifest_gates
    from onnxtax.verify.checksums import verify_artifact
    from onnxtax.verify.keys import PASSWORD_ENV, fingerprint, load_private_key

    model_path = Path(model_path)
    key = load_private_key(key_path)  # before anything: a bad key is exit 2 with nothing touched
    _, signing, _ = _library()
    version = library_version()
    checks = verify_artifact(model_path)
    report = SignReport(str(model_path), str(signature_path_for(model_path)), str(provenance_path_for(model_path)),
                        fingerprint(key), checks=checks)
    if not checks.passed:
        bad = ", ".join(f"{f.file} {f.status}" for f in checks.files if f.status != "ok")
        report.refused = f"the artifact does not match its manifest ({bad}): nothing signed"
        return report
    if checks.extra:
        report.refused = (f"{', '.join(checks.extra)} beside the artifact is named like its data but not in the "
                          "manifest: remove it, or re-export; nothing signed")
        return report
    manifest = read_manifest(model_path)
    assert manifest is not None
    entries = manifest_gates(manifest) + list(gates or [])
    failed = [g for g in entries if g["annotations"]["verdict"] != "passed"]
    if failed:
        report.refused = f"the {failed[0]['name']} gate did not pass: nothing signed"
        return report
    report.signed_utc = _now()
    statement = build_statement(model_path, manifest, entries, builder=builder, signed_utc=report.signed_utc,
                                library_version=version)
    report.gates = gates_of(statement)
    manifest_file, provenance_file, signature_file = (manifest_path_for(model_path), provenance_path_for(model_path),
                                                      signature_path_for(model_path))
    names = own_files(model_path, manifest)
    before = {p: (p.read_bytes() if p.is_file() else None) for p in (manifest_file, provenance_file)}
    try:
        write_output(provenance_file, statement, "the provenance")
        manifest["provenance"] = {"file": provenance_file.name, "sha256": sha256_file(provenance_file),
                                  "predicate_type": PREDICATE_TYPE}
        manifest["signature"] = {"method": METHOD, "file": signature_file.name,
                                 "key_fingerprint": report.key_fingerprint, "signed_utc": report.signed_utc,
                                 "covers": names, "library": f"model-signing {version}"}
        write_output(manifest_file, manifest, "the manifest")
        password = os.environ.get(PASSWORD_ENV)
        config = signing.Config().use_elliptic_key_signer(private_key=Path(key_path),
                                                          password=password.encode() if password else None)
        fd, tmp = tempfile.mkstemp(prefix=f".{signature_file.name}.", suffix=".tmp", dir=model_path.parent)
        os.close(fd)
        try:
            config.set_hashing_config(_hashing(model_path.parent, names)).sign(model_path.parent, tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, signature_file)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except BaseException:
        for path, data in before.items():
            if data is None:
                path.unlink(missing_ok=True)
            else:
                write_output(path, data, "the manifest")
        raise
    report.covers = [{"file": n, "sha256": sha256_file(model_path.parent / n)} for n in names]
    return report


# --------------------------------------------------------------------------- checking


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
    _, _, verifying = _library()
    hashing_config = _hashing(folder, present)
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
