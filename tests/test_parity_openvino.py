"""A real second execution provider: onnxruntime-openvino in its own virtualenv (`make test`).

OpenVINO runs float32 graphs itself and leaves float64 ops to ORT's CPU provider: a
real fallback, read from ORT's node assignment, that --fail-on-fallback turns into exit 1.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import EXAMPLES
from tests.test_parity import export_torchscript

pytestmark = pytest.mark.openvino

MIXED = '''
import torch
from torch import nn


class Float64Tail(nn.Module):
    """float32 in and out, a float64 computation in the middle."""
    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.l = nn.Linear(8, 4)

    def forward(self, x):
        return torch.relu((self.l(x).double() * 1.5 + 0.25).float())
'''

SELF_ATTENTION = '''
import torch
from torch import nn


class SelfAttention(nn.Module):
    """softmax(x x^T) x: four ONNX nodes (Transpose, MatMul, Softmax, MatMul)."""
    def forward(self, x):
        return (x @ x.transpose(1, 2)).softmax(-1) @ x
'''

OV = ["--provider", "openvino:device_type=CPU", "--provider", "cpu"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import torch

    from onnxtax.core.loading import load_model

    root = tmp_path_factory.mktemp("parity_ov")
    (root / "mixed.py").write_text(MIXED)
    fraud_spec, mixed_spec = f"{EXAMPLES}/fraud_detector.py:FraudDetector", f"{root / 'mixed.py'}:Float64Tail"
    fraud = export_torchscript(load_model(fraud_spec).module, root / "fraud.onnx", (torch.randn(3, 128),),
                               ["x"], ["prob"], {"x": {0: "batch"}})
    mixed = export_torchscript(load_model(mixed_spec).module, root / "mixed.onnx", (torch.randn(3, 8),),
                               ["x"], ["y"], {"x": {0: "batch"}})
    (root / "attention.py").write_text(SELF_ATTENTION)
    attention_spec = f"{root / 'attention.py'}:SelfAttention"
    attention = export_torchscript(load_model(attention_spec).module, root / "attention.onnx",
                                   (torch.randn(2, 3, 8),), ["x"], ["y"], {"x": {0: "batch", 1: "seq"}})
    return {"fraud": (fraud_spec, fraud), "mixed": (mixed_spec, mixed), "attention": (attention_spec, attention)}


def test_openvino_and_cpu_both_match_the_source(exported, cli, ov_python):
    spec, path = exported["fraud"]
    proc = cli("parity", spec, path, *OV, "--json", "-", python=ov_python)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    ov, cpu = data["providers"]
    assert (ov["name"], ov["options"], ov["status"]) == ("OpenVINOExecutionProvider", {"device_type": "CPU"}, "passed")
    assert cpu["name"] == "CPUExecutionProvider" and cpu["status"] == "passed"
    assert ov["placement"]["total_nodes"] > 0
    assert ov["placement"]["on_provider"] == ov["placement"]["total_nodes"]  # every node on OpenVINO
    assert len(ov["cases"]) == len(cpu["cases"]) == 3
    assert all(c["max_abs_diff"] < 1e-5 for c in ov["cases"])


def test_float64_ops_fall_back_to_cpu_and_fail_on_fallback_gates(exported, cli, ov_python, tmp_path):
    spec, path = exported["mixed"]
    proc = cli("parity", spec, path, *OV, "--json", tmp_path / "r.json", python=ov_python)
    assert proc.returncode == 0, proc.stderr  # the numbers match: fallback is reported, not failed
    placement = json.loads((tmp_path / "r.json").read_text())["providers"][0]["placement"]
    assert placement["fallback"] > 0 and "Cast" in placement["fallback_op_types"]
    assert placement["by_provider"].get("CPUExecutionProvider", 0) == placement["fallback"]
    assert "nodes on OpenVINOExecutionProvider" in proc.stdout and "on CPUExecutionProvider (Cast" in proc.stdout

    proc = cli("parity", spec, path, *OV, "--fail-on-fallback", "--junit", tmp_path / "j.xml", python=ov_python)
    assert proc.returncode == 1
    assert "fell back to CPUExecutionProvider" in proc.stdout and "--fail-on-fallback is set" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert '<testcase name="placement" classname="onnxtax.parity.openvino"' in (tmp_path / "j.xml").read_text()


def test_provider_state_across_shapes_is_told_apart_from_an_export_fault(exported, cli, ov_python):
    """Measured with onnxruntime-openvino 1.24.1: once a session ran seq=1, MatMul-Softmax-MatMul
    gives wrong values at seq >= 17 (a new session at seq=33 is right). The failure must not
    be blamed on the export."""
    spec, path = exported["attention"]
    proc = cli("parity", spec, path, *OV, "--dim", "batch=1", "--dim", "seq=1,33", "--samples", "1",
               "--json", "-", python=ov_python)
    assert proc.returncode == 1, proc.stderr
    ov, cpu = json.loads(proc.stdout)["providers"]
    assert cpu["status"] == "passed" and ov["status"] == "failed"
    assert [c["status"] for c in ov["cases"]] == ["passed", "failed"]
    assert "a new OpenVINOExecutionProvider session computes sample 0 of batch=1,seq=33 correctly" in (
        ov["cases"][1]["reason"])
    assert "provider bug, not an export problem" in ov["reason"] and "fixed at export" not in ov["reason"]
