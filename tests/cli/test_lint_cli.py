"""`onnxtax lint-ops` as a user runs it: exit codes, the table, --json, --sarif, --allow."""

from __future__ import annotations

import json

import jsonschema
import onnx
import pytest
from onnx import helper
from typer.testing import CliRunner

from onnxtax.cli import app
from tests.test_lint import SCHEMA, custom_domain_model, float64_model, make, save, vi
from tests.test_lint_source import BRANCH_LINE, BRANCH_MODEL

runner = CliRunner()


def lint(*args):
    return runner.invoke(app, ["lint-ops", *map(str, args)], env={"COLUMNS": "200"})


@pytest.fixture
def custom_model(tmp_path):
    return save(custom_domain_model(), tmp_path / "custom.onnx")


def test_clean_warnings_only_model_exits_0_with_table(tmp_path):
    path = save(float64_model(), tmp_path / "f64.onnx")
    res = lint(path)
    assert res.exit_code == 0, res.output
    assert "float64 (2)" in res.stdout and "to_double" in res.stdout and "passed" in res.stdout
    assert lint(path, "--fail-on", "warning").exit_code == 1


def test_failing_model_exit_1_json_stdout(custom_model):
    res = lint(custom_model, "--json", "-")
    assert res.exit_code == 1
    data = json.loads(res.stdout)  # nothing but JSON on stdout
    assert data["passed"] is False and data["summary"]["failing"] == 2
    assert {f["node"] for f in data["findings"] if f["rule"] == "custom-op"} == {"my_op_node", "other_node"}


def test_json_and_sarif_files(custom_model, tmp_path):
    out_json, out_sarif = tmp_path / "r" / "lint.json", tmp_path / "r" / "lint.sarif"
    res = lint(custom_model, "--json", out_json, "--sarif", out_sarif, "--target-ir", "9")
    assert res.exit_code == 1
    assert "custom-op (2)" in res.stdout and "ir-version (1)" in res.stdout and f"SARIF report: {out_sarif}" in res.stdout
    assert json.loads(out_json.read_text())["targets"] == {"opset": None, "ir_version": 9, "ort": None}
    sarif = json.loads(out_sarif.read_text())
    jsonschema.Draft4Validator(json.loads(SCHEMA.read_text())).validate(sarif)
    assert sorted(r["ruleId"] for r in sarif["runs"][0]["results"]) == ["custom-op", "custom-op", "ir-version"]


def test_allow_says_what_was_allowed(custom_model):
    res = lint(custom_model, "--allow", "custom-op:my_op_node", "--allow", "custom-op:other_*")
    assert res.exit_code == 0, res.output
    assert "allowed (2" in res.stdout and "custom-op:my_op_node" in res.stdout and "2 allowed" in res.stdout


def test_fail_on_warning_for_ort_only_op(tmp_path):
    gelu = make([helper.make_node("Gelu", ["x"], ["y"], name="gelu_ms", domain="com.microsoft")], [vi("x")],
                [vi("y")], opsets=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    path = save(gelu, tmp_path / "gelu.onnx")
    assert lint(path).exit_code == 0
    res = lint(path, "--fail-on", "warning")
    assert res.exit_code == 1 and "com.microsoft::Gelu" in res.stdout and "ORT-only" in res.stdout


@pytest.mark.parametrize("args, words", [
    (["--allow", "custom-ops"], "did you mean 'custom-op'?"),
    (["--fail-on", "fatal"], "--fail-on 'fatal'"),
    (["--input", "x:batch,4"], "--input is only used with --source"),
    (["--provider", "cuda-ish"], "unknown execution provider"),
])
def test_usage_errors_exit_2(custom_model, args, words):
    res = lint(custom_model, *args)
    assert res.exit_code == 2 and words in res.stderr and "Traceback" not in res.stderr


def test_missing_or_invalid_model_file_exit_2(tmp_path):
    res = lint(tmp_path / "nope.onnx")
    assert res.exit_code == 2 and "does not exist" in res.stderr
    bad = tmp_path / "bad.onnx"
    bad.write_text("hello")
    res = lint(bad)
    assert res.exit_code == 2 and "is a text file, not an ONNX model" in res.stderr
    bad.write_bytes(b"\x08\x07\x12\xff\xff")  # protobuf-looking bytes that do not parse
    res = lint(bad)
    assert res.exit_code == 2 and "not a readable ONNX model" in res.stderr


def test_source_finding_with_file_and_line(write_model, tmp_path):
    path = write_model(BRANCH_MODEL, "branchy_cli")
    model = save(make([helper.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x")], [vi("y")]),
                 tmp_path / "m.onnx")
    res = lint(model, "--source", f"{path}:Branchy", "--input", "x:batch,4", "--json", "-")
    assert res.exit_code == 1
    [f] = json.loads(res.stdout)["findings"]
    assert f["rule"] == "source-data-dependent-branch"
    assert f["source_location"] == f"{path.resolve()}:{BRANCH_LINE}"
    onnx.checker.check_model(str(model))


@pytest.mark.parametrize("flag", ["--sarif", "--json"])
def test_unwritable_report_path_is_a_usage_error(custom_model, flag):
    res = lint(custom_model, flag, custom_model / "lint.out")  # a file where a folder should be
    assert res.exit_code == 2 and f"cannot write {flag}" in res.stderr and "Traceback" not in res.stderr
    assert not (custom_model.parent / "lint.out").exists()
