"""lint_model on tiny real graphs: onnx.helper builds most of them (fast), one dynamo
export gives a torch.cond If with the exporter's stack-trace metadata. Every model is
loaded by the real ONNX Runtime inside the rules; nothing is mocked."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxtax.render.sarif import lint_sarif
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from onnxtax.core import ConfigError, LoadError
from onnxtax.lint import RULES, lint_model, parse_allow

SCHEMA = Path(__file__).resolve().parent / "data" / "sarif-schema-2.1.0.json"
# onnx 1.23 stamps IR 14, which ORT 1.31 refuses (max 13): every helper-built model says 10.
IR = 10


def make(nodes, inputs, outputs, *, opsets=None, initializers=(), ir=IR, functions=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=opsets or [helper.make_opsetid("", 17)],
                              functions=list(functions))
    model.ir_version = ir
    return model


def vi(name, elem=T.FLOAT, shape=("batch", 4)):
    return helper.make_tensor_value_info(name, elem, list(shape) if shape is not None else None)


def save(model, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def by_rule(report, rule):
    return [f for f in report.findings if f.rule == rule]


def custom_domain_model():
    """Two nodes in two unknown domains: ORT stops at the first, the lint names both."""
    return make([helper.make_node("MyOp", ["x"], ["t"], name="my_op_node", domain="my.domain"),
                 helper.make_node("Other", ["t"], ["y"], name="other_node", domain="x.vendor")],
                [vi("x")], [vi("y")],
                opsets=[helper.make_opsetid("", 17), helper.make_opsetid("my.domain", 1),
                        helper.make_opsetid("x.vendor", 1)])


def float64_model():
    nodes = [helper.make_node("Cast", ["x"], ["xd"], name="to_double", to=T.DOUBLE),
             helper.make_node("Mul", ["xd", "w"], ["yd"], name="mul_double"),
             helper.make_node("Cast", ["yd"], ["yf"], name="to_float", to=T.FLOAT),
             helper.make_node("Relu", ["yf"], ["y"], name="relu")]
    return make(nodes, [vi("x")], [vi("y")], initializers=[numpy_helper.from_array(np.ones(4), "w")])


def baked_reshape_model():
    """x [batch, 4] -> Reshape to the constant [3, 2, 2]: batch 3 baked in."""
    shape = numpy_helper.from_array(np.array([3, 2, 2], dtype=np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape_baked")]
    return make(nodes, [vi("x")], [vi("y", shape=("batch", 2, 2))], initializers=[shape])


def write_manifest(model_path: Path, inputs, outputs, dynamic_axes):
    """The keys lint reads from an `onnxtax export` manifest."""
    data = {"format_version": 1, "artifact": {"file": model_path.name}, "inputs": inputs, "outputs": outputs,
            "dynamic_axes": dynamic_axes}
    model_path.with_name(model_path.name[:-5] + ".manifest.json").write_text(json.dumps(data))


# ---------------------------------------------------------------------------------- custom-op


def test_custom_domain_nodes_are_errors_even_though_checker_passes(tmp_path):
    model = custom_domain_model()
    onnx.checker.check_model(model, full_check=True)  # the gap this rule closes
    report = lint_model(save(model, tmp_path / "custom.onnx"))
    assert not report
    found = {f.node: f for f in by_rule(report, "custom-op")}
    assert set(found) == {"my_op_node", "other_node"}
    mine = found["my_op_node"]
    assert (mine.severity, mine.op_type, mine.domain) == ("error", "MyOp", "my.domain")
    assert mine.details["loads"] is False
    assert "is not a registered function/op" in mine.details["runtime_error"]
    assert "custom-op library" in mine.hint
    assert found["other_node"].details["runtime_error"].startswith("Fatal error: x.vendor:Other")
    assert report.runtime["loads_model"] is False
    assert not by_rule(report, "runtime-load")  # explained by custom-op, not repeated


def test_com_microsoft_op_is_ort_only_warning(tmp_path):
    gelu = make([helper.make_node("Gelu", ["x"], ["y"], name="gelu_ms", domain="com.microsoft")], [vi("x")],
                [vi("y")], opsets=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    report = lint_model(save(gelu, tmp_path / "gelu.onnx"))
    assert report  # a warning does not fail at --fail-on error
    [f] = by_rule(report, "custom-op")
    assert (f.severity, f.node, f.domain, f.op_type) == ("warning", "gelu_ms", "com.microsoft", "Gelu")
    assert f.details == {"loads": True, "ort_only": True} and "ORT-only" in f.message
    strict = lint_model(tmp_path / "gelu.onnx", fail_on="warning")
    assert not strict and strict.failing == [strict.findings[0]]


def test_model_local_function_is_info(tmp_path):
    fn = helper.make_function("my.fns", "Double", ["a"], ["b"], [helper.make_node("Add", ["a", "a"], ["b"])],
                              [helper.make_opsetid("", 17)])
    model = make([helper.make_node("Double", ["x"], ["y"], name="call", domain="my.fns")], [vi("x")], [vi("y")],
                 opsets=[helper.make_opsetid("", 17), helper.make_opsetid("my.fns", 1)], functions=[fn])
    report = lint_model(save(model, tmp_path / "fn.onnx"))
    assert report and report.runtime["loads_model"]
    [f] = by_rule(report, "custom-op")
    assert f.severity == "info" and f.details["function"] == "my.fns::Double"


# ---------------------------------------------------------------------------------- control-flow


def loop_scan_model():
    """A Loop whose body holds an If, and a Scan: both reported with their subgraph paths."""
    then_g = helper.make_graph([helper.make_node("Identity", ["acc_in"], ["t_out"], name="then_id")], "then", [],
                               [vi("t_out", shape=None)])
    else_g = helper.make_graph([helper.make_node("Neg", ["acc_in"], ["e_out"], name="else_neg")], "else", [],
                               [vi("e_out", shape=None)])
    body = helper.make_graph(
        [helper.make_node("ReduceSum", ["acc_in"], ["s"], name="body_sum", keepdims=0),
         helper.make_node("Greater", ["s", "zero"], ["pos"], name="body_gt"),
         helper.make_node("If", ["pos"], ["acc_out"], name="inner_if", then_branch=then_g, else_branch=else_g),
         helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond")],
        "body", [vi("i", T.INT64, []), vi("cond_in", T.BOOL, []), vi("acc_in", shape=None)],
        [vi("cond_out", T.BOOL, []), vi("acc_out", shape=None)],
        [numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")])
    scan_body = helper.make_graph([helper.make_node("Add", ["st", "el"], ["st2"], name="scan_add"),
                                   helper.make_node("Identity", ["st2"], ["out_el"], name="scan_id")],
                                  "scan_body", [vi("st", shape=[4]), vi("el", shape=[4])],
                                  [vi("st2", shape=[4]), vi("out_el", shape=[4])])
    nodes = [helper.make_node("Loop", ["trip", "", "x"], ["looped"], name="the_loop", body=body),
             helper.make_node("Scan", ["init", "looped"], ["final", "ys"], name="the_scan", body=scan_body,
                              num_scan_inputs=1)]
    inits = [numpy_helper.from_array(np.array(3, dtype=np.int64), "trip"),
             numpy_helper.from_array(np.zeros(4, dtype=np.float32), "init")]
    return make(nodes, [vi("x")], [vi("final", shape=[4]), vi("ys")], initializers=inits)


def test_loop_scan_and_nested_if(tmp_path):
    report = lint_model(save(loop_scan_model(), tmp_path / "loops.onnx"))
    assert report.runtime["loads_model"], report.runtime["load_error"]
    found = {f.node: f for f in by_rule(report, "control-flow")}
    assert set(found) == {"the_loop", "the_scan", "inner_if"}
    assert found["the_loop"].details["trip_count"] == "constant" and "onnxruntime#13894" in found["the_loop"].hint
    assert found["the_scan"].details["num_scan_inputs"] == 1
    inner = found["inner_if"]
    assert inner.subgraph == "the_loop/body" and inner.where == "the_loop/body/inner_if"
    assert inner.details["condition"] == "Greater(ReduceSum(input 'acc_in'), constant)"
    assert inner.details["shape_only"] is False
    assert all(f.severity == "warning" for f in found.values()) and report


# ---------------------------------------------------------------------------------- opset / ir-version


def test_opset_and_ir_above_target(tmp_path):
    model = make([helper.make_node("LayerNormalization", ["x", "scale"], ["y"], name="ln"),
                  helper.make_node("Relu", ["y"], ["z"], name="relu")], [vi("x")], [vi("z")],
                 initializers=[numpy_helper.from_array(np.ones(4, dtype=np.float32), "scale")])
    report = lint_model(save(model, tmp_path / "m.onnx"), target_opset=13, target_ir=8)
    assert not report
    opset = by_rule(report, "opset")
    assert any(f.node is None and "model opset 17 is above the target opset 13" in f.message for f in opset)
    [ln] = [f for f in opset if f.node == "ln"]
    assert "exists only since opset 17" in ln.message and ln.details["target_version"] is None
    [relu] = [f for f in opset if f.node == "relu"]  # Relu changed at 14: opset 13 has the older one
    assert relu.details["target_version"] == 13
    [ir] = by_rule(report, "ir-version")
    assert ir.details == {"ir_version": IR, "limit": 8, "limit_from": "target"}
    # at or below the target: silent
    assert not by_rule(lint_model(tmp_path / "m.onnx", target_opset=17, target_ir=IR), "opset")


def test_changed_op_version_above_target(tmp_path):
    model = make([helper.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x")], [vi("y")])
    [f] = [f for f in by_rule(lint_model(save(model, tmp_path / "r.onnx"), target_opset=13), "opset") if f.node]
    assert f.node == "relu" and f.details == {"since_version": 14, "target_version": 13, "nodes": ["relu"]}


def test_ir_version_the_installed_runtime_refuses(tmp_path):
    """onnx 1.23's own default IR (14) is above what ORT 1.31 loads: the rule says so, and the
    lint still reports what ORT would say at its max IR."""
    from onnxtax.core.providers import ort_max_ir_version

    model = make([helper.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x")], [vi("y")], ir=14)
    report = lint_model(save(model, tmp_path / "ir14.onnx"))
    assert not report and report.runtime["loads_model"] is False
    [f] = by_rule(report, "ir-version")
    assert f.details["limit_from"] == "onnxruntime" and f.details["limit"] == ort_max_ir_version() < 14
    assert not by_rule(report, "runtime-load")
    assert any("loads the model" in n for n in report.notes)


def test_runtime_load_maps_unknown_standard_op_to_node(tmp_path):
    model = make([helper.make_node("FooBar", ["x"], ["y"], name="typo_node")], [vi("x")], [vi("y")])
    report = lint_model(save(model, tmp_path / "typo.onnx"))
    [f] = by_rule(report, "runtime-load")
    assert f.node == "typo_node" and f.op_type == "FooBar" and "No Op registered for FooBar" in f.message


# ---------------------------------------------------------------------------------- float64


def test_float64_inputs_initializers_casts_and_subgraphs(tmp_path):
    report = lint_model(save(float64_model(), tmp_path / "f64.onnx"))
    kinds = {(f.details["kind"], f.node) for f in by_rule(report, "float64")}
    assert kinds == {("initializer", "w"), ("cast", "to_double")}
    assert report  # warnings only
    # double graph input/output, and a Cast to double inside an If branch
    then_g = helper.make_graph([helper.make_node("Cast", ["x"], ["t"], name="inner_cast", to=T.DOUBLE)], "t", [],
                               [vi("t", T.DOUBLE, shape=None)])
    else_g = helper.make_graph([helper.make_node("Identity", ["xd"], ["e"], name="inner_id")], "e", [],
                               [vi("e", T.DOUBLE, shape=None)])
    model = make([helper.make_node("Cast", ["x"], ["xd"], name="c0", to=T.DOUBLE),
                  helper.make_node("If", ["flag"], ["y"], name="branch", then_branch=then_g, else_branch=else_g)],
                 [vi("x"), vi("flag", T.BOOL, [])], [vi("y", T.DOUBLE)])
    report = lint_model(save(model, tmp_path / "f64if.onnx"))
    found = {(f.details["kind"], f.where) for f in by_rule(report, "float64")}
    assert ("output", "y") in found and ("cast", "branch/then_branch/inner_cast") in found


# ---------------------------------------------------------------------------------- baked-shape


def test_baked_reshape_with_manifest(tmp_path):
    path = save(baked_reshape_model(), tmp_path / "baked.onnx")
    assert not by_rule(lint_model(path), "baked-shape")  # no manifest: sizes unknown, said in a note
    write_manifest(path, [{"name": "x", "dims": ["batch", 4], "dtype": "float32"}],
                   [{"name": "y", "dims": ["batch", 2, 2], "dtype": "float32"}],
                   {"batch": {"export_size": 3, "used_by": [["x", 0]]}})
    report = lint_model(path)
    [f] = by_rule(report, "baked-shape")
    assert (f.node, f.op_type, f.severity) == ("reshape_baked", "Reshape", "warning")
    assert f.details == {"values": [3], "symbols": ["batch"]} and "export size of 'batch'" in f.message


def test_concat_built_shapes_static_split_is_not_baked(tmp_path):
    """Attention's unflatten(-1, (3, E)) holds a 3 that is not the batch; a seq length in a
    Concat-built shape is baked (the TorchScript exporter's self-attention Reshape)."""
    def model(pieces):
        consts = [numpy_helper.from_array(np.array(v, dtype=np.int64), f"c{i}") for i, v in enumerate(pieces)]
        nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape", start=0, end=2),
                 helper.make_node("Concat", ["s"] + [c.name for c in consts], ["target"], name="cat", axis=0),
                 helper.make_node("Reshape", ["x", "target"], ["y"], name="reshape")]
        return make(nodes, [vi("x", shape=("seq", "batch", 96))], [vi("y", shape=None)], initializers=consts,
                    opsets=[helper.make_opsetid("", 17)])

    axes = {"batch": {"export_size": 3}, "seq": {"export_size": 5}}
    ok = save(model([[3], [32]]), tmp_path / "split.onnx")
    write_manifest(ok, [{"name": "x", "dims": ["seq", "batch", 96]}], [], axes)
    assert not by_rule(lint_model(ok), "baked-shape")
    baked = save(model([[5], [-1]]), tmp_path / "baked_seq.onnx")
    write_manifest(baked, [{"name": "x", "dims": ["seq", "batch", 96]}], [], axes)
    [f] = by_rule(lint_model(baked), "baked-shape")
    assert f.node == "reshape" and f.details["symbols"] == ["seq"] and "Concat" in f.message


def test_static_input_where_manifest_declares_dynamic(tmp_path):
    model = make([helper.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x", shape=(3, 4))],
                 [vi("y", shape=(3, 4))])
    path = save(model, tmp_path / "static.onnx")
    write_manifest(path, [{"name": "x", "dims": ["batch", 4], "dtype": "float32"}], [],
                   {"batch": {"export_size": 3}})
    [f] = by_rule(lint_model(path), "baked-shape")
    assert f.node == "x" and f.details == {"kind": "input", "axis": 0, "symbol": "batch", "size": 3}


# ---------------------------------------------------------------------------------- allow / fail-on / report


def test_allow_rule_and_node_patterns(tmp_path):
    path = save(custom_domain_model(), tmp_path / "custom.onnx")
    report = lint_model(path, allow=["custom-op:my_*"])
    assert not report and [f.node for f in report.failing] == ["other_node"]
    assert [f.node for f in report.allowed] == ["my_op_node"]
    report = lint_model(path, allow=["custom-op"])
    assert report and report.counts()["allowed"] == 2 and report.to_dict()["allow"] == ["custom-op"]
    with pytest.raises(ConfigError, match="unknown rule 'custom-ops'") as exc:
        parse_allow(["custom-ops:n1"])
    assert exc.value.hint == "did you mean 'custom-op'?"
    with pytest.raises(ConfigError):
        lint_model(path, fail_on="fatal")


def test_missing_and_invalid_model_files(tmp_path):
    with pytest.raises(LoadError, match="does not exist"):
        lint_model(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all \x00\xff")
    with pytest.raises(LoadError, match="not a readable ONNX model"):
        lint_model(bad)


def test_to_dict_schema(tmp_path):
    data = json.loads(json.dumps(lint_model(save(float64_model(), tmp_path / "f.onnx")).to_dict()))
    assert set(data) == {"format_version", "model", "passed", "fail_on", "summary", "model_info", "runtime",
                         "targets", "providers", "source", "rules_run", "allow", "notes", "seconds", "memory",
                         "findings"}
    assert data["summary"]["by_rule"] == {"float64": 2} and data["passed"] is True
    assert set(data["findings"][0]) == {"rule", "severity", "message", "hint", "node", "op_type", "domain",
                                        "subgraph", "source_location", "allowed", "details"}
    assert data["model_info"]["opsets"] == {"": 17} and data["runtime"]["max_ir_version"] >= IR


# ---------------------------------------------------------------------------------- dynamo export + SARIF

COND_SOURCE = '''\
import torch


class CondModel(torch.nn.Module):
    def forward(self, x):
        y = x.double().float()
        return torch.cond(x.sum() > 0, lambda t: t * 2, lambda t: t - 1, (y,))
'''
COND_LINE = 7  # the torch.cond line above


@pytest.fixture(scope="module")
def cond_onnx(tmp_path_factory):
    """A torch.cond model exported by the dynamo exporter (an ONNX If with stack-trace metadata)."""
    import importlib.util

    import torch

    folder = tmp_path_factory.mktemp("cond")
    src = folder / "cond_model.py"
    src.write_text(COND_SOURCE)
    spec = importlib.util.spec_from_file_location("cond_model_for_lint", src)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = folder / "cond.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own deprecation noise while exporting
        torch.onnx.export(module.CondModel().eval(), (torch.randn(3, 4),), str(out), dynamo=True, opset_version=18,
                          dynamic_shapes=({0: torch.export.Dim.DYNAMIC},), external_data=False, verbose=False)
    return out, src


def test_torch_cond_if_with_source_location(cond_onnx):
    path, src = cond_onnx
    report = lint_model(path)
    [f] = by_rule(report, "control-flow")
    assert f.op_type == "If" and f.details["inputs"] == ["x"] and f.details["shape_only"] is False
    assert f.source_location == f"{src}:{COND_LINE}"
    assert {g.details["kind"] for g in by_rule(report, "float64")} >= {"cast"}


def test_sarif_is_valid_and_points_at_the_user_file(cond_onnx, tmp_path):
    import jsonschema

    path, src = cond_onnx
    report = lint_model(path, target_opset=17, allow=["float64"])
    sarif = lint_sarif(report, base_dir=src.parent)
    jsonschema.Draft4Validator(json.loads(SCHEMA.read_text())).validate(sarif)
    run = sarif["runs"][0]
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == list(RULES)
    results = run["results"]
    assert len(results) == len(report.findings)
    [cf] = [r for r in results if r["ruleId"] == "control-flow"]
    loc = cf["locations"][0]
    assert loc["physicalLocation"] == {"artifactLocation": {"uri": "cond_model.py", "uriBaseId": "%SRCROOT%"},
                                       "region": {"startLine": COND_LINE}}
    assert loc["logicalLocations"][0]["fullyQualifiedName"].startswith("cond.onnx:")
    assert cf["relatedLocations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "cond.onnx"
    assert cf["level"] == "warning" and run["tool"]["driver"]["rules"][cf["ruleIndex"]]["id"] == "control-flow"
    levels = {r["ruleId"]: r["level"] for r in results}
    assert levels["opset"] == "error"
    assert all(r.get("suppressions") for r in results if r["ruleId"] == "float64")
    assert not any(r.get("suppressions") for r in results if r["ruleId"] != "float64")


def test_sarif_paths_are_relative_to_the_repository_root(cond_onnx, tmp_path, monkeypatch):
    """Code scanning resolves URIs against the checkout root, not the step's working directory."""
    path, src = cond_onnx
    report = lint_model(path)
    sub = src.parent / "sub"
    sub.mkdir(exist_ok=True)
    monkeypatch.chdir(sub)
    monkeypatch.delenv("GITHUB_WORKSPACE", raising=False)
    (src.parent / ".git").mkdir(exist_ok=True)  # the folder is a checkout

    def control_flow_uri(sarif):
        [cf] = [r for r in sarif["runs"][0]["results"] if r["ruleId"] == "control-flow"]
        return cf["locations"][0]["physicalLocation"]["artifactLocation"], sarif["runs"][0]["originalUriBaseIds"]

    loc, bases = control_flow_uri(lint_sarif(report))
    assert loc == {"uri": "cond_model.py", "uriBaseId": "%SRCROOT%"}
    assert bases["%SRCROOT%"]["uri"] == src.parent.as_uri() + "/"
    monkeypatch.setenv("GITHUB_WORKSPACE", str(src.parent.parent))
    loc, _ = control_flow_uri(lint_sarif(report))
    assert loc == {"uri": f"{src.parent.name}/cond_model.py", "uriBaseId": "%SRCROOT%"}
