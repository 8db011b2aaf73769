"""Signing in `onnxtax ci` ([sign] key after every gate, [verify] key and require_signature) and in
`onnxtax report merge` (one key and the same bytes on every host), on tiny real models."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from onnxtax.ci import load_config, run_ci
from onnxtax.core import ConfigError
from tests.test_ci import CONFIG, make_project
from tests.test_sign import write_key

SIGNING = """
[sign]
key = "keys/ci.pem"

[verify]
key = "keys/ci.pub"
require_signature = true
"""


@pytest.fixture(scope="module")
def signed_run(tmp_path_factory):
    config = CONFIG.replace("[parity]\n", "[parity]\nlocalize = false\n")  # frozen fails; where is not the point
    root = make_project(tmp_path_factory.mktemp("ci_sign"), config + SIGNING).parent
    (root / "keys").mkdir()
    write_key(root / "keys", "ci")
    reports = root / "reports"
    report = run_ci(load_config(root / "onnxtax.toml"), reports_dir=reports)
    return root, report, reports


def test_ci_signs_only_what_passed_every_gate(signed_run):
    root, report, reports = signed_run
    frozen, good = report.models
    assert good.stages["sign"].status == "passed" and "signature verified" in good.stages["sign"].summary
    assert frozen.stages["sign"].status == "not_run" and frozen.stages["sign"].summary == "not run: parity did not pass"
    assert (root / "onnx" / "good.sig").is_file() and not (root / "onnx" / "frozen.sig").exists()
    data = json.loads((reports / "good.json").read_text())
    manifest = json.loads((root / "onnx" / "good.manifest.json").read_text())
    assert data["signature"] == {"status": "signed", "key_fingerprint": manifest["signature"]["key_fingerprint"],
                                 "file": "good.sig", "digests": {"good.onnx": manifest["artifact"]["sha256"]},
                                 "int8": None}
    assert data["manifest"]["signature"] == manifest["signature"]  # the report holds the signed manifest
    assert json.loads((reports / "frozen.json").read_text())["signature"]["status"] == "not_run"
    summary = (reports / "summary.md").read_text()
    assert "| sign |" in summary and "signed good.onnx" in summary


def test_the_provenance_holds_the_digest_and_facts_of_each_stage_report(signed_run):
    from onnxtax.verify.attest import report_digest

    root, _, reports = signed_run
    stages = json.loads((reports / "good.json").read_text())["stages"]
    statement = json.loads((root / "onnx" / "good.provenance.json").read_text())
    assert statement["predicate"]["runDetails"]["builder"]["id"] == "urn:onnxtax:ci"
    gates = {b["name"]: b for b in statement["predicate"]["runDetails"]["byproducts"]}
    assert set(gates) == {"export", "lint", "parity"}
    for name in ("lint", "parity"):
        assert gates[name]["digest"]["sha256"] == report_digest(stages[name]["result"]), name
        assert gates[name]["annotations"]["binding"] == "run"
    parity = stages["parity"]["result"]
    assert gates["parity"]["annotations"]["providers"] == ["cpu"]
    assert gates["parity"]["annotations"]["shapes"] == len(parity["shapes"])
    assert gates["lint"]["annotations"]["warnings"] == stages["lint"]["result"]["summary"]["warning"] == 1


def test_a_reused_artifact_must_come_signed_when_a_signature_is_required(signed_run, tmp_path):
    root, _, _ = signed_run
    copy = tmp_path / "project"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("reports"))
    cfg = load_config(copy / "onnxtax.toml")
    came_signed = run_ci(cfg, only=["good"], write=False, reuse_artifacts=True)
    verify = came_signed.models[0].stages["verify"]
    assert verify.status == "passed" and "signature verified" in verify.summary
    for name in ("good.sig", "good.provenance.json"):
        (copy / "onnx" / name).unlink()
    manifest = json.loads((copy / "onnx" / "good.manifest.json").read_text())
    del manifest["signature"], manifest["provenance"]
    (copy / "onnx" / "good.manifest.json").write_text(json.dumps(manifest))
    unsigned = run_ci(cfg, only=["good"], write=False, reuse_artifacts=True)
    verify = unsigned.models[0].stages["verify"]
    assert verify.status == "failed" and "unsigned" in verify.error
    assert unsigned.models[0].stages["sign"].status == "not_run" and unsigned.exit_code == 1


@pytest.mark.parametrize("table, words", [
    ('[sign]\nkey = "keys/ci.pub"\n', "is a public key; signing needs the private key"),
    ('[sign]\nkey = "keys/ci.pem"\n[verify]\nkey = "keys/other.pub"\n', "other.pub is not the public half of [sign] key"),
    ('[verify]\nrequire_signature = true\n', "a required signature needs a key to check"),
    ('[sign]\nkey = "keys/none.pem"\n', "does not exist"),
])
def test_signing_settings_are_checked_before_anything_runs(tmp_path, table, words):
    root = make_project(tmp_path / "p", CONFIG + table).parent
    (root / "keys").mkdir()
    write_key(root / "keys", "ci")
    write_key(root / "keys", "other")
    with pytest.raises(ConfigError) as exc:
        load_config(root / "onnxtax.toml")
    assert words in exc.value.message and "onnxtax.toml:" in exc.value.message


def _as_host(src: Path, dst: Path, label: str, change=None) -> Path:
    shutil.copytree(src, dst)
    for path in dst.glob("*.json"):
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or "host" not in data:
            continue
        for model in ([data] if data.get("schema") == "onnxtax.ci.model/1" else data.get("models", [])) + [data]:
            if isinstance(model.get("host"), dict):
                model["host"]["label"] = label
            if change and model.get("model") == "good":
                change(model)
        path.write_text(json.dumps(data))
    return dst


def test_merge_shows_one_key_and_the_same_bytes_and_flags_a_host_that_differs(signed_run, tmp_path, cli):
    _, _, reports = signed_run
    good_only = tmp_path / "a"
    shutil.copytree(reports, good_only)
    (good_only / "frozen.json").unlink()
    ci = json.loads((good_only / "ci.json").read_text())
    ci["models"] = [m for m in ci["models"] if m["model"] == "good"]
    ci.update(passed=True, exit_code=0)
    (good_only / "ci.json").write_text(json.dumps(ci))
    same = _as_host(good_only, tmp_path / "b", "host-b")
    proc = cli("report", "merge", good_only, same, "--json", "-")
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)["signatures"][0]
    assert row["verdict"] == "consistent" and row["problems"] == [] and len(row["hosts"]) == 2

    def other_bytes(model):
        model["signature"]["digests"]["good.onnx"] = "ab" * 32

    differs = _as_host(good_only, tmp_path / "c", "host-c", other_bytes)
    proc = cli("report", "merge", good_only, differs)
    assert proc.returncode == 1 and "host-c built different bytes: good.onnx abababababab" in proc.stdout

    def unsigned(model):
        model["signature"].update(status="unsigned", key_fingerprint=None, file=None)

    proc = cli("report", "merge", good_only, _as_host(good_only, tmp_path / "d", "host-d", unsigned), "-o",
               tmp_path / "m")
    assert proc.returncode == 1 and "host-d did not sign it (unsigned)" in proc.stdout
    assert "### Signatures" in (tmp_path / "m" / "matrix.md").read_text()
