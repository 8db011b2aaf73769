"""`onnxtax sign`: an artifact's own files signed with OpenSSF model signing (`model-signing`), with a
private elliptic-curve key, offline.

What is signed: the .onnx, the external data files its manifest lists, the manifest and the
provenance statement (verify.attest) - this artifact's files, not the folder's other artifacts.
model_signing hashes them (sha256 per file, the same digests the manifest keeps), puts the list
in an in-toto statement, and signs it in a DSSE envelope inside a Sigstore bundle: NAME.sig.
verify.signature checks it.

Order: the provenance is written, then the manifest with its `provenance` and `signature`
records, then the signature over all of them; so the manifest that names the signature is
itself signed. A failure on the way puts the manifest and provenance back as they were.

SignReport.to_dict(): {"model", "passed", "signature", "provenance", "method": "key", "key_fingerprint",
"signed_utc", "covers": [{"file", "sha256"}], "gates": [verify.attest.gates_of], "refused": null | "...",
"checks": {the VerifyReport run before signing}}
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from onnxtax.core.manifest import manifest_path_for, provenance_path_for, signature_path_for
from onnxtax.core.report import Verdict
from onnxtax.verify.attest import PREDICATE_TYPE
from onnxtax.verify.signature import METHOD, artifact_hashing, library, library_version, own_files


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
    _, signing, _ = library()
    version = library_version()
    checks = verify_artifact(model_path)
    report = SignReport(str(model_path), str(signature_path_for(model_path)), str(provenance_path_for(model_path)),
                        fingerprint(key), checks=checks)
    bad = [f for f in checks.files if f.status != "ok"]  # an earlier signature's state does not matter: it is replaced
    if bad:
        says = {"missing": "is missing", "changed": "differs", "outside": "is outside the artifact's folder"}
        report.refused = (f"the artifact does not match its manifest ({', '.join(f'{f.file} {says[f.status]}' for f in bad)}"
                          "): nothing signed")
        return report
    if checks.extra:
        report.refused = (f"{', '.join(checks.extra)} beside the artifact is named like its data but not in the "
                          "manifest: remove it, or re-export; nothing signed")
        return report
    manifest = read_manifest(model_path)
    assert manifest is not None
    given = {g["name"] for g in gates or []}  # a gate's own report wins over the manifest's record of it
    entries = [g for g in manifest_gates(manifest) if g["name"] not in given] + list(gates or [])
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
            config.set_hashing_config(artifact_hashing(model_path.parent, names)).sign(model_path.parent, tmp)
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
