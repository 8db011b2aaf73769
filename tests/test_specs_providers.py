"""Input specs, provider names and ORT's real node placement."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from onnxtax.core.errors import InputSpecError, ProviderError
from onnxtax.core.providers import (ort_error_summary, ort_max_ir_version, ort_max_opset, open_session, parse_provider,
                               placement_of, resolve_providers)
from onnxtax.core.specs import (SampleRecipe, export_sizes, make_inputs, parse_dim_values, parse_input_specs,
                           parse_ranges)


def test_export_sizes_default_distinct_and_overridable():
    specs = parse_input_specs(["ids:[batch,seq]:int64", "mask:batch,seq:int64", "img:batch,3,h,w"])
    assert export_sizes(specs) == {"batch": 3, "seq": 5, "h": 7, "w": 11}
    assert export_sizes(specs, {"seq": [16]}) == {"batch": 3, "seq": 16, "h": 5, "w": 7}


def test_dim_values_single_and_multi():
    assert parse_dim_values(["batch=1,8,33"], multi=True) == {"batch": [1, 8, 33]}
    with pytest.raises(InputSpecError, match="several values"):
        parse_dim_values(["batch=1,8"])
    with pytest.raises(InputSpecError, match="SYMBOL=VALUE"):
        parse_dim_values(["batch"])


def test_make_inputs_seeded_ranged_and_signed():
    specs = parse_input_specs(["x:batch,64", "ids:batch,seq:int64", "flag:batch:bool"])
    recipe = SampleRecipe(seed=7, ranges=parse_ranges(["ids=0:30522"]))
    a = make_inputs(specs, {"batch": 4, "seq": 9}, recipe, sample_index=0)
    b = make_inputs(specs, {"batch": 4, "seq": 9}, recipe, sample_index=0)
    c = make_inputs(specs, {"batch": 4, "seq": 9}, recipe, sample_index=1)
    assert all(np.array_equal(a[k], b[k]) for k in a), "same seed, same sample: same data"
    assert not np.array_equal(a["x"], c["x"])
    assert a["x"].dtype == np.float32 and a["x"].shape == (4, 64)
    assert (a["x"] < 0).any() and (a["x"] > 0).any()
    assert a["ids"].dtype == np.int64 and a["ids"].min() >= 0 and a["ids"].max() < 30522
    assert a["flag"].dtype == np.bool_
    # magnitudes differ across samples (0.1x, 1x, 10x scales)
    scales = [np.abs(make_inputs(specs, {"batch": 4, "seq": 9}, recipe, i)["x"]).mean() for i in range(3)]
    assert max(scales) / min(scales) > 20


@pytest.mark.parametrize("bad", ["ids=5", "ids=5:1", "ids=a:b"])
def test_bad_ranges(bad):
    with pytest.raises(InputSpecError):
        parse_ranges([bad])


def test_provider_names():
    assert parse_provider("cpu").name == "CPUExecutionProvider"
    assert parse_provider("TensorRT").name == "TensorrtExecutionProvider"
    req = parse_provider("openvino:device_type=CPU,precision=FP32")
    assert req.name == "OpenVINOExecutionProvider"
    assert req.options == {"device_type": "CPU", "precision": "FP32"}
    assert req.label == "openvino:device_type=CPU,precision=FP32"
    with pytest.raises(ProviderError, match="did you mean 'cuda'"):
        parse_provider("cdua")
    with pytest.raises(ProviderError, match="KEY=VALUE"):
        parse_provider("openvino:CPU")


def test_unavailable_provider_error_and_skip():
    with pytest.raises(ProviderError) as info:
        resolve_providers(["tensorrt"])
    assert "not available on this host" in str(info.value) and "CPUExecutionProvider" in str(info.value)
    usable, skipped = resolve_providers(["cpu", "tensorrt"], skip_unavailable=True)
    assert [p.name for p in usable] == ["CPUExecutionProvider"]
    assert [p.name for p in skipped] == ["TensorrtExecutionProvider"]
    with pytest.raises(ProviderError, match="not a compute provider"):
        resolve_providers(["azure"])
    default, _ = resolve_providers(None)
    assert "AzureExecutionProvider" not in [p.name for p in default]


def _float64_model(path):
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Cast", ["a"], ["b"], to=onnx.TensorProto.DOUBLE, name="to64"),
             helper.make_node("Mul", ["b", "b"], ["c"], name="square64"),
             helper.make_node("Cast", ["c"], ["y"], to=onnx.TensorProto.FLOAT, name="to32")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_cpu_placement_from_ort_assignment(tmp_path):
    path = _float64_model(tmp_path / "f64.onnx")
    session = open_session(path, opt_level="disable")
    placement = placement_of(session, "CPUExecutionProvider")
    assert placement.method == "ort-graph-assignment"
    assert placement.total_nodes == 4 and placement.on_provider == 4 and not placement.fell_back
    out = session.run(None, {"x": np.array([[-1, 2, 3, -4]], dtype=np.float32)})[0]
    assert out.tolist() == [[0, 4, 9, 0]]


def test_runtime_limits_come_from_the_runtime():
    assert 9 <= ort_max_ir_version() <= 99
    assert 17 <= ort_max_opset() <= 99


def test_ort_error_summary_names_the_node():
    exc = RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Non-zero status code returned while running "
                       "Reshape node. Name:'/enc/Reshape_4' Status Message: bad shape")
    line, node = ort_error_summary(exc)
    assert node == "/enc/Reshape_4" and line.startswith("Non-zero status code")



def test_one_summary_for_real_ort_refusals_and_run_failures():
    """ORT's own messages: status prefix and C++ source location dropped, the node found."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import helper

    from onnxtax.core.providers import load_error, probe_model

    ir = load_error(probe_model(ir_version=1000))
    assert ir.startswith("[ONNXRuntimeError]") and ".cc:" in ir
    line, node = ort_error_summary(ir)
    assert line.startswith("Unsupported model IR version: 1000, max supported IR version:") and node is None

    add = helper.make_node("Add", ["s", "s"], ["y"], name="add_strings")
    typed = load_error(probe_model(add, inputs=[helper.make_tensor_value_info("s", onnx.TensorProto.STRING, [1])],
                                   outputs=[helper.make_tensor_value_info("y", onnx.TensorProto.STRING, [1])],
                                   opsets={"": 17}, ir_version=8))
    assert ort_error_summary(typed)[1] == "add_strings"

    reshape = helper.make_node("Reshape", ["x", "shape"], ["y"], name="the_reshape")
    model = probe_model(reshape, inputs=[helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None]),
                                         helper.make_tensor_value_info("shape", onnx.TensorProto.INT64, [1])],
                        outputs=[helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                        opsets={"": 17}, ir_version=8)
    assert load_error(model) is None
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception) as info:
        session.run(None, {"x": np.zeros(6, np.float32), "shape": np.array([4], np.int64)})
    line, node = ort_error_summary(info.value)
    assert node == "the_reshape"
    assert "reshape_helper.h" not in line and "input_shape_size == requested_shape_size was false" in line


PLACEMENT_SCRIPT = """
import json, sys
from onnxtax.core.providers import open_session, parse_provider, placement_of
session = open_session(sys.argv[1], parse_provider("openvino:device_type=CPU"))
print(json.dumps(placement_of(session, "OpenVINOExecutionProvider").to_dict()))
"""


@pytest.mark.openvino
def test_openvino_placement_shows_float64_fallback(tmp_path, ov_python):
    import json
    import subprocess

    path = _float64_model(tmp_path / "f64.onnx")
    proc = subprocess.run([ov_python, "-c", PLACEMENT_SCRIPT, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    placement = json.loads(proc.stdout.strip().splitlines()[-1])
    assert placement["on_provider"] >= 1, "Relu runs on OpenVINO"
    assert placement["fallback"] >= 1
    assert placement["by_provider"].get("CPUExecutionProvider", 0) >= 1
    assert any(n["op_type"] in ("Mul", "Cast") for n in placement["fallback_nodes"])


def test_samples_at_different_sizes_are_not_prefixes_of_each_other():
    specs = parse_input_specs(["x:batch,4"])
    small = make_inputs(specs, {"batch": 4}, SampleRecipe(seed=0), 0)["x"]
    large = make_inputs(specs, {"batch": 7}, SampleRecipe(seed=0), 0)["x"]
    assert not np.array_equal(large[:4], small)


def test_an_option_ort_does_not_apply_is_a_usage_error():
    # ORT 1.31 takes `cpu:foo=1` without a word and applies {} (session.get_provider_options())
    with pytest.raises(ProviderError) as info:
        resolve_providers(["cpu:foo=1"])
    assert "CPUExecutionProvider has no option 'foo'" in info.value.message
    assert "cpu takes no provider options" in info.value.hint
    usable, _ = resolve_providers(["cpu"])
    assert [p.label for p in usable] == ["cpu"]


def test_cli_with_an_unknown_option_is_exit_2_before_any_work(cli, tmp_path):
    path = _float64_model(tmp_path / "f64.onnx")
    proc = cli("lint-ops", path, "--provider", "cpu:intra_op_threads=2")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no option 'intra_op_threads'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.openvino
def test_a_misspelt_openvino_option_is_exit_2_not_a_silent_cpu_run(cli, tmp_path, ov_python):
    # onnxruntime-openvino 1.24 rejects the key, prints an "EP Error" and runs the session on CPU
    path = _float64_model(tmp_path / "f64.onnx")
    proc = cli("lint-ops", path, "--provider", "openvino:device_tpye=GPU", python=ov_python)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "did not start with the options device_tpye=GPU" in proc.stderr
    assert "Invalid OpenVINO EP option: device_tpye" in proc.stderr
    proc = cli("lint-ops", path, "--provider", "openvino:device_type=CPU", python=ov_python)
    assert proc.returncode in (0, 1) and "error:" not in proc.stderr, proc.stderr
