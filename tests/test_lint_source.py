"""Source rules: real PyTorch models written to files, traced by torch.export and
torch.jit.trace; findings must land on the exact line of the user's file."""

from __future__ import annotations

import json

import pytest

from onnxtax.core import InputSpecError
from onnxtax.lint.source import lint_source
from onnxtax.core import parse_input_specs

BRANCH_MODEL = """\
import torch


class Branchy(torch.nn.Module):
    def forward(self, x):
        y = x + 1
        if x.sum() > 0:
            return y * 2
        return y - 1
"""
BRANCH_LINE = 7

MIXED_MODEL = """\
import torch


@torch.library.custom_op("onnxtax_lint_test::triple", mutates_args=())
def triple(x: torch.Tensor) -> torch.Tensor:
    return x * 3


@triple.register_fake
def _(x):
    return torch.empty_like(x)


class ClampFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        return g


class Mixed(torch.nn.Module):
    def forward(self, x):
        y = triple(x)
        y = ClampFn.apply(y)
        k = int(x.max())
        return y * k
"""
CUSTOM_LINE, AUTOGRAD_LINE, INT_LINE = 26, 27, 28

CLEAN_MODEL = """\
import torch


class Clean(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return torch.where(x.sum(dim=1, keepdim=True) > 0, self.fc(x), -self.fc(x))
"""

X = parse_input_specs(["x:batch,4"])


def rules_at(result):
    return {(f.rule, f.source_line): f for f in result.findings}


def test_data_dependent_branch_at_the_exact_line(write_model):
    path = write_model(BRANCH_MODEL, "branchy")
    result = lint_source(f"{path}:Branchy", X)
    [f] = result.findings
    assert f.rule == "source-data-dependent-branch" and f.severity == "error"
    assert f.source_location == f"{path.resolve()}:{BRANCH_LINE}"
    assert "if x.sum() > 0:" in f.message and "torch.cond" in f.hint
    assert f.details["found_by"] == "torch.export and torch.jit.trace"
    assert result.info["steps"]["draft_export"].startswith("ok") and result.info["sizes"] == {"batch": 3}


def test_custom_op_autograd_function_and_int_of_tensor(write_model):
    path = write_model(MIXED_MODEL, "mixed")
    found = rules_at(lint_source(f"{path}:Mixed", X))
    assert set(found) == {("source-custom-op", CUSTOM_LINE), ("source-custom-op", AUTOGRAD_LINE),
                          ("source-tensor-to-python", INT_LINE)}
    custom = found[("source-custom-op", CUSTOM_LINE)]
    assert (custom.severity, custom.domain, custom.op_type) == ("error", "onnxtax_lint_test", "triple")
    assert "custom_translation_table" in custom.hint
    autograd = found[("source-custom-op", AUTOGRAD_LINE)]
    assert autograd.severity == "warning" and "ClampFn" in autograd.message
    to_python = found[("source-tensor-to-python", INT_LINE)]
    assert to_python.severity == "warning" and "int(x.max())" in to_python.message


def test_clean_model_module_instance_and_manifest_inputs(write_model):
    import importlib.util

    path = write_model(CLEAN_MODEL, "clean")
    spec = importlib.util.spec_from_file_location("clean_for_lint", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    manifest = {"inputs": [{"name": "x", "dims": ["batch", 4], "dtype": "float32"}],
                "dynamic_axes": {"batch": {"export_size": 5}}}
    result = lint_source(module.Clean(), None, manifest=json.loads(json.dumps(manifest)))
    assert result.findings == []
    assert result.info["sizes"] == {"batch": 5} and result.info["inputs"] == ["x:[batch,4]:float32"]
    assert result.info["file"] == str(path)


def test_inputs_are_required(write_model):
    path = write_model(CLEAN_MODEL, "clean2")
    with pytest.raises(InputSpecError, match="--source needs the model's inputs"):
        lint_source(f"{path}:Clean", None)
    with pytest.raises(InputSpecError, match="forward"):
        lint_source(f"{path}:Clean", parse_input_specs(["x:batch,4", "y:batch,4"]))


def test_lint_model_with_source_merges_findings(write_model, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from onnxtax.lint import lint_model

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.save(model, str(tmp_path / "m.onnx"))
    path = write_model(BRANCH_MODEL, "branchy_for_lint_model")
    report = lint_model(tmp_path / "m.onnx", source=f"{path}:Branchy", inputs=X,
                        allow=["source-data-dependent-branch"])
    assert report and [f.rule for f in report.allowed] == ["source-data-dependent-branch"]
    assert report.source["spec"].endswith(":Branchy") and "source-trace" in report.rules_run


HELPER_FILE = """\
def gate(h):
    if h.mean() > 0:
        return h * 2
    return h
"""
HELPER_LINE = 2
CALLER_MODEL = """\
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from lint_helper_gate import gate


class Caller(torch.nn.Module):
    def forward(self, x):
        return gate(x + 1)
"""


def test_branch_in_a_helper_file_is_reported_once_at_the_helper(write_model):
    """torch.export's stack holds forward()'s call and the helper's `if`: the fix belongs at the `if`."""
    helper = write_model(HELPER_FILE, "lint_helper_gate")
    path = write_model(CALLER_MODEL, "caller")
    result = lint_source(f"{path}:Caller", X)
    [f] = result.findings
    assert f.rule == "source-data-dependent-branch"
    assert f.source_location == f"{helper.resolve()}:{HELPER_LINE}"
    assert f.details["found_by"] == "torch.export and torch.jit.trace"


def test_inputs_that_do_not_fit_are_an_error_not_a_pass(write_model, capfd):
    path = write_model(CLEAN_MODEL, "clean_wrong_inputs")
    result = lint_source(f"{path}:Clean", parse_input_specs(["x:batch,9"]))
    [f] = result.findings
    assert f.rule == "source-trace" and f.severity == "error"
    assert "x:[batch,9]:float32 (batch=3)" in f.message and "--input" in f.hint
    assert f.source_location == f"{path.resolve()}:10"
    assert "Traceback" not in capfd.readouterr().err  # torch's fake-tensor log is kept quiet
