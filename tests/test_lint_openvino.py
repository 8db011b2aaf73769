"""provider-fallback on the real OpenVINO provider (second virtualenv, onnxruntime-openvino):
float64 ops are assigned to the CPU provider, read from ORT's own graph assignment."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from tests.test_lint import float64_model, save


@pytest.mark.openvino
def test_float64_nodes_fall_back_from_openvino(ov_python, tmp_path):
    path = save(float64_model(), tmp_path / "f64.onnx")
    proc = run_cli("lint-ops", path, "--provider", "openvino:device_type=CPU", "--provider", "cuda",
                   "--json", "-", python=ov_python, timeout=120)
    assert proc.returncode == 0, proc.stderr  # fallbacks are warnings
    data = json.loads(proc.stdout)
    assert data["runtime"]["package"] == "onnxruntime-openvino"
    [checked] = data["providers"]["checked"]
    assert checked["label"] == "openvino:device_type=CPU"
    placement = checked["placement"]
    assert placement["method"] == "ort-graph-assignment" and placement["total_nodes"] == 4 and placement["on_provider"] == 1
    assert data["providers"]["not_checked"] == ["cuda"]
    fallback = [f for f in data["findings"] if f["rule"] == "provider-fallback"]
    moved = {f["node"]: f for f in fallback if f["details"].get("checked")}
    assert set(moved) == {"to_double", "mul_double", "to_float"}
    assert all(f["details"]["ran_on"] == "CPUExecutionProvider" and "(float64)" in f["message"]
               for f in moved.values())
    [skipped] = [f for f in fallback if not f["details"].get("checked")]
    assert skipped["severity"] == "info" and "not checked here" in skipped["message"]
    # the same fallbacks fail the gate at --fail-on warning
    proc = run_cli("lint-ops", path, "--provider", "openvino:device_type=CPU", "--fail-on", "warning",
                   python=ov_python, timeout=120)
    assert proc.returncode == 1 and "mul_double" in proc.stdout


@pytest.mark.openvino
def test_openvino_on_an_absent_device_runs_nothing(ov_python, tmp_path):
    """device_type=GPU without a GPU: ORT registers OpenVINO yet assigns it no node."""
    path = save(float64_model(), tmp_path / "f64.onnx")
    proc = run_cli("lint-ops", path, "--provider", "openvino:device_type=GPU", "--json", "-", python=ov_python,
                   timeout=120)
    assert proc.returncode == 1
    [none] = [f for f in json.loads(proc.stdout)["findings"]
              if f["rule"] == "provider-fallback" and f["severity"] == "error"]
    assert "runs none of the 4 nodes" in none["message"]
