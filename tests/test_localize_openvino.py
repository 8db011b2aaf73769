"""A divergence only one provider has, localised on that provider (onnxruntime-openvino, its own venv).

Measured with onnxruntime-openvino 1.24.1: once a session ran seq=1, MatMul-Softmax-MatMul gives
wrong values at seq >= 17. The CPU provider computes the same graph correctly."""

from __future__ import annotations

import json

import pytest

from tests.test_parity import export_torchscript

pytestmark = pytest.mark.openvino

ATTENTION_NET = '''
import torch
from torch import nn


class SelfAttention(nn.Module):
    def forward(self, x):
        return (x @ x.transpose(1, 2)).softmax(-1) @ x


class AttentionNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(8, 8)
        self.attn = SelfAttention()
        self.out = nn.Linear(8, 4)

    def forward(self, x):
        return self.out(self.attn(self.proj(x)))
'''


def test_a_divergence_on_openvino_only_is_localised_there(tmp_path, cli, ov_python):
    import torch

    from onnxtax.core import load_model

    src = tmp_path / "attention_net.py"
    src.write_text(ATTENTION_NET)
    spec = f"{src}:AttentionNet"
    path = export_torchscript(load_model(spec).module, tmp_path / "net.onnx", (torch.randn(2, 3, 8),), ["x"], ["y"],
                              {"x": {0: "batch", 1: "seq"}})
    proc = cli("parity", spec, path, "--provider", "openvino:device_type=CPU", "--provider", "cpu",
               "--dim", "batch=1", "--dim", "seq=1,33", "--samples", "1", "--localize", "--json", "-",
               python=ov_python)
    assert proc.returncode == 1, proc.stderr
    ov, cpu = json.loads(proc.stdout)["providers"]
    assert cpu["status"] == "passed" and cpu["localization"] is None
    loc = ov["localization"]
    assert loc["status"] == "localized" and loc["provider_name"] == "OpenVINOExecutionProvider"
    assert loc["provider_specific"] is True and loc["summary"].startswith(
        "on openvino:device_type=CPU only (cpu passes this case)")
    assert (loc["module"], loc["class_name"], loc["origin"]) == ("attn", "SelfAttention", "local")
    assert loc["case"] == {"shape": "batch=1,seq=33", "sample": 0, "output": "y"}
    assert loc["op_type"] == "MatMul" and loc["source"]["function"] == "SelfAttention.forward"
    assert [p["module"] for p in loc["trail"]] == ["attn", "out", "output y"]
    # with the ops' values as extra outputs the provider fuses differently and the fault is gone: the op
    # level says so, rather than "every op agrees, the difference is made elsewhere"
    assert loc["op"]["status"] == "not-reproduced" and "agrees with eager too" in loc["op"]["notes"][0]
    assert "localized: on openvino:device_type=CPU only" in ov["reason"]
