"""`onnxtax export / verify / providers` as a user runs them: exit codes, messages, --json."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from tests.conftest import EXAMPLES

CASES = Path(__file__).resolve().parents[1] / "models" / "export_cases.py"


def test_export_then_verify_json(cli, tmp_path):
    out = tmp_path / "fraud.onnx"
    proc = cli("export", f"{EXAMPLES}/fraud_detector.py:FraudDetector", "-o", out, "--input", "x:batch,128",
               "--json", "-")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["passed"] is True and data["opset"] == 18
    assert data["inputs"] == [{"name": "x", "dims": ["batch", 128], "dtype": "float32"}]
    assert data["outputs"][0]["dims"] == ["batch", 1]
    assert {c["name"] for c in data["checks"]} >= {"opset", "dynamic_axes", "onnx.checker", "onnxruntime_smoke"}
    assert "Traceback" not in proc.stderr
    proc = cli("verify", out, "--json", "-")
    assert proc.returncode == 0 and json.loads(proc.stdout)["passed"] is True
    # a flipped byte: exit 1 naming the file
    raw = bytearray(out.read_bytes())
    raw[-10] ^= 0xFF
    out.write_bytes(bytes(raw))
    proc = cli("verify", out)
    assert proc.returncode == 1 and "fraud.onnx" in proc.stderr


def test_export_human_summary(cli, tmp_path):
    proc = cli("export", f"{CASES}:TwoInputs", "-o", tmp_path / "m.onnx", "--input", "ids:[batch,seq]:int64",
               "--input", "mask:batch,seq:int64", "--exporter", "torchscript")
    assert proc.returncode == 0, proc.stderr
    assert "[batch, seq]" in proc.stdout and "logits" in proc.stdout and "onnxruntime_smoke" in proc.stdout


def test_export_check_failure_exit_1_no_traceback(cli, tmp_path):
    out = tmp_path / "r.onnx"
    proc = cli("export", f"{CASES}:Reflect", "-o", out, "--input", "x:batch,3,8,8", "--opset", "14")
    assert proc.returncode == 1
    assert "requested opset 14" in proc.stderr and "Pad" in proc.stderr and "nothing was written" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not out.exists()


def test_debug_shows_traceback(cli, tmp_path):
    proc = cli("export", "missing.py:M", "-o", tmp_path / "x.onnx", "--input", "x:4", "--debug")
    assert proc.returncode == 2 and "Traceback" in proc.stderr


@pytest.mark.parametrize("args, words", [
    (["missing.py:Model", "--input", "x:batch,4"], "does not exist"),
    ([f"{CASES}:Nope", "--input", "x:batch,4"], "has no attribute 'Nope'"),
    ([f"{CASES}:NOT_A_MODEL", "--input", "x:batch,4"], "not an nn.Module"),
    ([f"{CASES}:TwoInputs", "--input", "ids:batch,seq:int64"], "forward() takes 2 (ids, mask)"),
    ([f"{CASES}:Linear", "--input", "x:batch,4:complex64"], "unknown dtype 'complex64'"),
    ([f"{CASES}:Linear", "--input", "x:batch,4", "--dim", "seq=4"], "names no dynamic axis"),
    ([f"{CASES}:Linear", "--input", "x:batch,4", "--dim", "batch=0"], "not a positive integer"),
    ([f"{CASES}:Linear", "--input", "x:batch,4", "--exporter", "jit"], "unknown --exporter"),
    ([f"{CASES}:Linear"], "no --input given"),
])
def test_usage_errors_exit_2_one_line(cli, tmp_path, args, words):
    out = tmp_path / "x.onnx"
    proc = cli("export", *args, "-o", out)
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr
    assert "fix:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_verify_without_manifest_is_exit_2(cli, tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "m.onnx"))
    proc = cli("verify", tmp_path / "m.onnx")
    assert proc.returncode == 2 and "no manifest" in proc.stderr
    (tmp_path / "t.onnx").write_bytes(b"x")
    proc = cli("verify", tmp_path / "t.onnx")
    assert proc.returncode == 2 and "is a text file, not an ONNX model" in proc.stderr


def test_providers_json(cli):
    proc = cli("providers", "--json", "-")
    assert proc.returncode == 0
    data = json.loads(proc.stdout)
    names = {p["name"]: p for p in data["providers"]}
    assert names["CPUExecutionProvider"]["compute"] is True
    if "AzureExecutionProvider" in names:
        assert names["AzureExecutionProvider"]["compute"] is False
    assert data["max_ir_version"] >= 9


def test_providers_in_openvino_env(cli, ov_python):
    proc = cli("providers", "--json", "-", python=ov_python)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["package"] == "onnxruntime-openvino"
    assert "OpenVINOExecutionProvider" in {p["name"] for p in data["providers"]}


def test_output_under_a_file_is_exit_2_before_any_export(cli, tmp_path):
    (tmp_path / "taken").write_text("")
    proc = cli("export", f"{CASES}:Linear", "-o", tmp_path / "taken" / "m.onnx", "--input", "x:batch,4")
    assert proc.returncode == 2, proc.stderr
    assert f"cannot write -o {tmp_path / 'taken' / 'm.onnx'}: {tmp_path / 'taken'} is not a directory" in proc.stderr
    assert "fix:" in proc.stderr and "Traceback" not in proc.stderr


def test_verify_names_a_missing_sidecar(cli, tmp_path):
    from onnxtax.export import export_model

    out = tmp_path / "m.onnx"
    assert export_model(f"{CASES}:Linear", out, ["x:batch,4"], exporter="torchscript", external_data="always")
    (tmp_path / "m.onnx.data").unlink()
    proc = cli("verify", out)
    assert proc.returncode == 1
    assert "m.onnx.data is missing" in proc.stderr


def test_two_processes_export_the_same_bytes(tmp_path):
    """str hashes are salted per process (PYTHONHASHSEED unset or 'random'): nothing derived
    from them may reach the artifact, or the same model exports to different bytes. The two
    processes run side by side."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONHASHSEED": "random", "COLUMNS": "200"}
    env.pop("GITHUB_STEP_SUMMARY", None)
    procs = {run: subprocess.Popen([sys.executable, "-m", "onnxtax", "export", f"{CASES}:Linear", "-o",
                                    str(tmp_path / run / "m.onnx"), "--input", "x:batch,4", "--json", "-"],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for run in ("a", "b")}
    shas = []
    for run, proc in procs.items():
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        out = tmp_path / run / "m.onnx"
        manifest = json.loads((tmp_path / run / "m.manifest.json").read_text())
        assert manifest["artifact"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
        shas.append((manifest["artifact"]["sha256"], [(e["file"], e["sha256"])
                                                      for e in manifest["artifact"]["external_data"]]))
    assert shas[0] == shas[1]


def _exported_linear(tmp_path: Path) -> Path:
    from onnxtax.export import export_model

    out = tmp_path / "art" / "m.onnx"
    assert export_model(f"{CASES}:Linear", out, ["x:batch,4"], exporter="torchscript")
    return out


@pytest.mark.parametrize("listed", ["../../../../../../etc/hostname", "/etc/hostname", "link.data"])
def test_verify_never_reads_a_manifest_path_outside_the_artifact_folder(cli, tmp_path, listed):
    out = _exported_linear(tmp_path)
    (out.parent / "link.data").symlink_to("/etc/hostname")  # a symlink out is outside too
    manifest_path = out.with_name("m.manifest.json")
    manifest = json.loads(manifest_path.read_text())
    real = hashlib.sha256(Path("/etc/hostname").read_bytes()).hexdigest()
    manifest["artifact"]["external_data"] = [{"file": listed, "sha256": real, "size_bytes": 1}]
    manifest_path.write_text(json.dumps(manifest))
    proc = cli("verify", out, "--json", "-")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    files = json.loads(proc.stdout)["files"]
    assert files[1] == {"file": listed, "expected_sha256": real, "actual_sha256": None, "status": "outside"}
    proc = cli("verify", out)
    assert f"{listed} is outside the artifact's folder" in " ".join(proc.stderr.split())


def test_verify_reports_files_named_like_the_artifacts_data(cli, tmp_path):
    out = _exported_linear(tmp_path)
    (out.parent / "m.onnx.data").write_bytes(b"\0" * 8)
    (out.parent / "m.bin").write_bytes(b"\0" * 8)
    (out.parent / "other.txt").write_text("unrelated")
    (out.parent / "m.py").write_text("# the model's source, beside its export")
    (out.parent / "m.int8.onnx").write_bytes(b"another artifact")
    proc = cli("verify", out, "--json", "-")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["extra"] == ["m.bin", "m.onnx.data"]
    proc = cli("verify", out)
    assert "extra" in proc.stdout and "m.onnx.data" in proc.stdout and "other.txt" not in proc.stdout


def test_verify_on_a_missing_onnx_says_so(cli, tmp_path):
    out = _exported_linear(tmp_path)
    out.unlink()
    proc = cli("verify", out)
    assert proc.returncode == 1 and "m.onnx is missing" in proc.stderr
    proc = cli("verify", tmp_path / "nothing.onnx")
    assert proc.returncode == 2 and "nothing.onnx does not exist" in proc.stderr and "Traceback" not in proc.stderr
