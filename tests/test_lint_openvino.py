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


def outer_scope_if_in_loop_model():
    """A Loop whose body holds an If whose branches read the body's values from the outer scope
    (what torch.cond exports to): ORT-OpenVINO 1.24 aborts the process loading it."""
    import numpy as np
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    from tests.test_lint import make, vi

    then_g = helper.make_graph([helper.make_node("Neg", ["v"], ["t_out"], name="then_neg")], "then", [],
                               [vi("t_out", shape=[2])])
    else_g = helper.make_graph([helper.make_node("Identity", ["v"], ["e_out"], name="else_id")], "else", [],
                               [vi("e_out", shape=[2])])
    body = helper.make_graph(
        [helper.make_node("Add", ["v_in", "one"], ["v"], name="body_add"),
         helper.make_node("ReduceSum", ["v"], ["s"], keepdims=0, name="body_sum"),
         helper.make_node("Greater", ["s", "zero"], ["c"], name="body_gt"),
         helper.make_node("If", ["c"], ["v_out"], then_branch=then_g, else_branch=else_g, name="inner_if"),
         helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond")],
        "body", [vi("i", T.INT64, []), vi("cond_in", T.BOOL, []), vi("v_in", shape=[2])],
        [vi("cond_out", T.BOOL, []), vi("v_out", shape=[2])],
        [numpy_helper.from_array(np.ones(2, np.float32), "one"), numpy_helper.from_array(np.array(0, np.float32), "zero")])
    loop = helper.make_node("Loop", ["trip", "go", "x"], ["y"], body=body, name="the_loop")
    return make([loop], [vi("x", shape=[2])], [vi("y", shape=[2])],
                initializers=[numpy_helper.from_array(np.array(3, np.int64), "trip"),
                              numpy_helper.from_array(np.array(True), "go")])


@pytest.mark.openvino
def test_a_provider_that_aborts_on_the_model_is_a_finding_not_a_crash(ov_python, tmp_path):
    path = save(outer_scope_if_in_loop_model(), tmp_path / "nested.onnx")
    out = tmp_path / "lint.sarif"
    proc = run_cli("lint-ops", path, "--provider", "openvino:device_type=CPU", "--json", "-", "--sarif", out,
                   python=ov_python, timeout=120)
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    [crash] = [f for f in data["findings"] if f["rule"] == "provider-fallback"]
    assert crash["severity"] == "error" and crash["details"]["crashed"] is True
    assert "crashed the process loading the model: signal SIGABRT" in crash["message"]
    assert data["providers"]["checked"][0]["placement"] is None
    assert {f["node"] for f in data["findings"] if f["rule"] == "control-flow"} == {"the_loop", "inner_if"}
    assert json.loads(out.read_text())["runs"][0]["results"]  # the reports are still written
