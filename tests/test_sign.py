"""`onnxtax sign` and `onnxtax verify --key` on a tiny real artifact with external data, signed with
keys made here by `cryptography`: the round trip, each way a signed artifact can go wrong (a byte,
a file added or removed, another key, a damaged signature, no signature when one is required),
the provenance against the gate reports it records, and bad keys as one-line usage errors."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

CASES = Path(__file__).resolve().parent / "models" / "export_cases.py"
SPEC = f"{CASES}:Linear"


def write_key(folder: Path, name: str, kind: str = "p256") -> tuple[Path, Path]:
    """(private.pem, public.pem), made in process."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    key = rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(
        {"p256": ec.SECP256R1(), "k1": ec.SECP256K1()}[kind])
    private, public = folder / f"{name}.pem", folder / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """An exported artifact (.onnx + .data), its parity and lint-ops reports, signed with both as gates."""
    from tests.conftest import run_in_process

    root = tmp_path_factory.mktemp("signed")
    keys = root / "keys"
    keys.mkdir()
    pair = write_key(keys, "dev")
    other = write_key(keys, "other")
    art = root / "art"
    proc = run_in_process("export", SPEC, "-o", art / "m.onnx", "-i", "x:batch,4", "--exporter", "torchscript",
                          "--external-data", "always")
    assert proc.returncode == 0, proc.stderr
    reports = root / "reports"
    proc = run_in_process("parity", SPEC, art / "m.onnx", "--json", reports / "parity.json")
    assert proc.returncode == 0, proc.stderr
    proc = run_in_process("lint-ops", art / "m.onnx", "--json", reports / "lint.json")
    assert proc.returncode == 0, proc.stderr
    proc = run_in_process("sign", art / "m.onnx", "--key", pair[0], "--report", reports / "parity.json",
                          "--report", reports / "lint.json", "--json", reports / "sign.json")
    assert proc.returncode == 0, proc.stderr
    return {"root": root, "art": art, "key": pair[0], "pub": pair[1], "other": other[1], "reports": reports,
            "sign_stdout": proc.stdout}


@pytest.fixture
def copy(signed, tmp_path):
    """The signed artifact's folder, copied for a test to damage."""
    dst = tmp_path / "art"
    shutil.copytree(signed["art"], dst)
    return dst


def test_sign_then_verify_round_trip(cli, signed, copy):
    from onnxtax.verify.keys import fingerprint, load_public_key

    assert "signed m.onnx with key sha256:" in signed["sign_stdout"]
    manifest = json.loads((copy / "m.manifest.json").read_text())
    record = manifest["signature"]
    assert record["method"] == "key" and record["file"] == "m.sig"
    assert record["key_fingerprint"] == fingerprint(load_public_key(signed["pub"]))
    assert record["covers"] == ["m.onnx", "m.onnx.data", "m.manifest.json", "m.provenance.json"]
    # the fingerprint is the signature's own key hint: one name for the key everywhere
    bundle = json.loads((copy / "m.sig").read_text())
    assert record["key_fingerprint"] == "sha256:" + bundle["verificationMaterial"]["publicKey"]["hint"]
    proc = cli("verify", copy / "m.onnx", "--key", signed["pub"], "--json", copy.parent / "v.json")
    assert proc.returncode == 0, proc.stderr
    assert "m.sig verified" in proc.stdout and "4 files" in proc.stdout
    data = json.loads((copy.parent / "v.json").read_text())
    assert data["passed"] and data["signature"]["status"] == "verified"
    assert {f["file"]: f["status"] for f in data["signature"]["files"]} == {
        "m.onnx": "ok", "m.onnx.data": "ok", "m.manifest.json": "ok", "m.provenance.json": "ok"}
    # without a key: the checksums pass, the signature is named but not taken for checked
    proc = cli("verify", copy / "m.onnx")
    assert proc.returncode == 0 and "not checked" in proc.stdout and "not authenticated" in proc.stdout


def _fails(cli, copy, key, *words):
    proc = cli("verify", copy / "m.onnx", "--key", key)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "verify failed:" in proc.stderr and "Traceback" not in proc.stderr
    for w in words:
        assert w in proc.stderr, proc.stderr
    return proc


def test_a_changed_byte_in_external_data_fails_naming_the_file(cli, signed, copy):
    raw = bytearray((copy / "m.onnx.data").read_bytes())
    raw[3] ^= 0x01
    (copy / "m.onnx.data").write_bytes(bytes(raw))
    proc = _fails(cli, copy, signed["pub"], "m.onnx.data changed since signing")
    assert "changed  m.onnx.data" in proc.stdout


def test_an_added_file_fails(cli, signed, copy):
    (copy / "m.onnx_data").write_bytes(b"\0" * 16)  # named like the artifact's data: a loader could pick it up
    _fails(cli, copy, signed["pub"], "m.onnx_data was added after signing")
    # another artifact's files in the same folder are not this one's
    (copy / "m.onnx_data").unlink()
    (copy / "other.onnx").write_bytes(b"x")
    assert cli("verify", copy / "m.onnx", "--key", signed["pub"]).returncode == 0


def test_a_removed_file_fails(cli, signed, copy):
    (copy / "m.provenance.json").unlink()
    _fails(cli, copy, signed["pub"], "m.provenance.json was removed after signing")


def test_the_wrong_key_fails(cli, signed, copy):
    _fails(cli, copy, signed["other"], "m.sig was made with another key")


def test_a_truncated_signature_fails(cli, signed, copy):
    raw = (copy / "m.sig").read_bytes()
    (copy / "m.sig").write_bytes(raw[: len(raw) // 2])
    _fails(cli, copy, signed["pub"], "m.sig does not parse (truncated or damaged)")


def test_a_signature_whose_listed_digests_were_edited_fails(cli, signed, copy):
    """Someone rewrites the signed list to match a new file: the signature no longer verifies."""
    bundle = json.loads((copy / "m.sig").read_text())
    payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    payload["predicate"]["resources"][0]["digest"] = "0" * 64
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    (copy / "m.sig").write_text(json.dumps(bundle))
    _fails(cli, copy, signed["pub"], "does not match its content")


def test_an_unsigned_artifact_fails_only_when_a_signature_is_required(cli, signed, tmp_path):
    from onnxtax.export import export_model

    out = tmp_path / "u.onnx"
    assert export_model(SPEC, out, ["x:batch,4"], exporter="torchscript")
    proc = cli("verify", out, "--key", signed["pub"])
    assert proc.returncode == 0 and "unsigned" in proc.stdout
    proc = cli("verify", out, "--key", signed["pub"], "--require-signature")
    assert proc.returncode == 1 and "unsigned: no signature beside the artifact" in proc.stderr
    proc = cli("verify", out, "--require-signature")  # a signature nobody checks proves nothing
    assert proc.returncode == 2 and "--require-signature needs --key" in proc.stderr and "fix:" in proc.stderr


def test_a_manifest_that_names_a_missing_signature_fails_without_a_key(cli, copy):
    (copy / "m.sig").unlink()
    proc = cli("verify", copy / "m.onnx")
    assert proc.returncode == 1 and "records a signature (m.sig) that is missing" in proc.stderr


def test_the_provenance_records_what_the_gates_reported(cli, signed, copy):
    from onnxtax.verify.attest import report_digest

    from onnxtax.verify.attest import conformance_problem

    statement = json.loads((copy / "m.provenance.json").read_text())
    assert conformance_problem(statement) is None  # read by in-toto-attestation's Statement and SLSA bindings
    assert conformance_problem({**statement, "predicate": {**statement["predicate"], "gates": []}}) is not None
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    manifest = json.loads((copy / "m.manifest.json").read_text())
    assert statement["subject"] == [
        {"name": "m.onnx", "digest": {"sha256": manifest["artifact"]["sha256"]}},
        {"name": "m.onnx.data", "digest": {"sha256": manifest["artifact"]["external_data"][0]["sha256"]}}]
    pred = statement["predicate"]
    source = next(d for d in pred["buildDefinition"]["resolvedDependencies"] if d["name"] == "model source")
    assert source["digest"]["sha256"] == manifest["source"]["sha256"] and source["annotations"]["recorded"] == "export"
    git = next(d for d in pred["buildDefinition"]["resolvedDependencies"] if d["name"] == "git")
    assert git["annotations"]["path"] == "tests/models/export_cases.py" and len(git["digest"]["gitCommit"]) == 40
    assert pred["buildDefinition"]["externalParameters"]["exporter"]["name"] == "torchscript"
    assert set(pred["buildDefinition"]["internalParameters"]["versions"]) >= {"torch", "onnx", "onnxruntime", "onnxtax"}
    gates = {b["name"]: b for b in pred["runDetails"]["byproducts"]}
    assert set(gates) == {"export", "parity", "lint"}
    parity = json.loads((signed["reports"] / "parity.json").read_text())
    lint = json.loads((signed["reports"] / "lint.json").read_text())
    assert gates["parity"]["digest"]["sha256"] == report_digest(parity)
    assert gates["lint"]["digest"]["sha256"] == report_digest(lint)
    notes = gates["parity"]["annotations"]
    assert notes["verdict"] == "passed" and notes["binding"] == "path"
    assert notes["providers"] == [p["label"] for p in parity["providers"] if p["status"] == "passed"]
    assert notes["shapes"] == len(parity["shapes"]) and notes["rtol"] == parity["tolerance"]["rtol"]
    assert gates["lint"]["annotations"]["errors"] == lint["summary"]["error"]
    proc = cli("verify", copy / "m.onnx", "--key", signed["pub"])
    day = pred["runDetails"]["metadata"]["finishedOn"][:10]
    assert f"passed parity on cpu at {notes['shapes']} shapes on {day} with onnxtax" in proc.stdout
    assert "passed lint-ops (0 errors" in proc.stdout


def test_a_gate_that_did_not_pass_refuses_the_signing(cli, signed, copy, tmp_path):
    report = json.loads((signed["reports"] / "parity.json").read_text())
    report["passed"] = False
    report["onnx"] = str(copy / "m.onnx")
    (tmp_path / "p.json").write_text(json.dumps(report))
    before = (copy / "m.manifest.json").read_bytes()
    (copy / "m.sig").unlink()
    proc = cli("sign", copy / "m.onnx", "--key", signed["key"], "--report", tmp_path / "p.json")
    assert proc.returncode == 1 and "the parity gate did not pass: nothing signed" in proc.stderr
    assert not (copy / "m.sig").exists() and (copy / "m.manifest.json").read_bytes() == before


def test_a_report_of_another_artifact_is_a_usage_error(cli, signed, copy):
    proc = cli("sign", copy / "m.onnx", "--key", signed["key"], "--report", signed["reports"] / "parity.json")
    assert proc.returncode == 2 and "is the parity report of" in proc.stderr and "fix:" in proc.stderr


def test_sign_refuses_an_artifact_that_does_not_match_its_manifest(cli, signed, copy):
    (copy / "m.onnx.data").write_bytes(b"changed")
    signature = (copy / "m.sig").read_bytes()
    proc = cli("sign", copy / "m.onnx", "--key", signed["key"])
    assert proc.returncode == 1 and "does not match its manifest" in proc.stderr
    assert (copy / "m.sig").read_bytes() == signature


def test_export_sign_key_signs_what_it_exported(cli, signed, tmp_path):
    out = tmp_path / "e.onnx"
    proc = cli("export", SPEC, "-o", out, "-i", "x:batch,4", "--exporter", "torchscript", "--sign-key", signed["key"])
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "e.sig").is_file() and "passed export checks" in proc.stdout
    statement = json.loads((tmp_path / "e.provenance.json").read_text())
    assert statement["predicate"]["runDetails"]["builder"]["id"] == "urn:onnxtax:export"
    assert cli("verify", out, "--key", signed["pub"]).returncode == 0
    # exporting again replaces the artifact: the old signature and provenance go with it
    proc = cli("export", SPEC, "-o", out, "-i", "x:batch,4", "--exporter", "torchscript")
    assert proc.returncode == 0 and not (tmp_path / "e.sig").exists() and not (tmp_path / "e.provenance.json").exists()


@pytest.mark.parametrize("case, words", [
    ("missing", "signing key {dir}/nope.pem does not exist"),
    ("rsa", "is an RSA key; model signing takes an elliptic-curve key"),
    ("k1", "is a secp256k1 elliptic-curve key"),
    ("public", "is a public key; signing needs the private key"),
    ("garbage", "is not a PEM private key"),
])
def test_bad_signing_keys_are_exit_2_in_one_line(cli, signed, copy, tmp_path, case, words):
    key = {"missing": lambda: tmp_path / "nope.pem", "rsa": lambda: write_key(tmp_path, "r", "rsa")[0],
           "k1": lambda: write_key(tmp_path, "k", "k1")[0], "public": lambda: signed["pub"],
           "garbage": lambda: (tmp_path / "g.pem").write_text("hello") and tmp_path / "g.pem"}[case]()
    signature = (copy / "m.sig").read_bytes()
    proc = cli("sign", copy / "m.onnx", "--key", key)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert words.format(dir=tmp_path) in proc.stderr and "fix:" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 2  # error: ... / fix: ...
    assert (copy / "m.sig").read_bytes() == signature


def test_a_private_key_given_to_verify_is_exit_2(cli, signed, copy):
    proc = cli("verify", copy / "m.onnx", "--key", signed["key"])
    assert proc.returncode == 2 and "is a private key; verifying needs only the public key" in proc.stderr


def test_help_and_keyless_verify_do_not_import_model_signing(signed):
    """model_signing costs ~0.7 s to import: only a key pays for it."""
    code = ("import runpy, sys\nsys.argv = {argv!r}\ntry:\n    runpy.run_module('onnxtax', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "assert 'model_signing' not in sys.modules, 'model_signing was imported'\n")
    for argv in (["onnxtax", "--help"], ["onnxtax", "verify", str(signed["art"] / "m.onnx")]):
        proc = subprocess.run([sys.executable, "-c", code.format(argv=argv)], capture_output=True, text=True,
                              cwd=ROOT, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
