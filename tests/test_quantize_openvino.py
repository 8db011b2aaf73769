"""`onnxtax quantize` with OpenVINO as a second real provider (onnxruntime-openvino, its own virtualenv)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.models import tiny

pytestmark = pytest.mark.openvino


def test_budgets_hold_on_every_provider_and_latency_is_measured_on_each(ov_python, tmp_path):
    from onnxtax.export import export_model

    assert export_model(tiny.spec("Tiny"), tmp_path / "tiny.onnx", ["x:batch,16"], exporter="torchscript")
    rng = np.random.default_rng(7)
    np.savez(tmp_path / "cal.npz", x=rng.standard_normal((128, 16)).astype(np.float32))
    np.savez(tmp_path / "rows.npz", x=rng.standard_normal((200, 16)).astype(np.float32))
    proc = run_cli("quantize", tiny.spec("Tiny"), tmp_path / "tiny.onnx", "-o", tmp_path / "tiny.int8.onnx",
                   "--eval", f"rows={tmp_path / 'rows.npz'}", "--calibration", tmp_path / "cal.npz",
                   "--mode", "static", "--budget", "agreement@0.5=0.8", "--provider", "cpu",
                   "--provider", "openvino:device_type=CPU", "--bench-batch-sizes", "1", "--bench-min-time", "0.02",
                   "--json", "-", python=ov_python)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    checks = data["candidates"][0]["evaluation"]["segments"]
    assert {s["provider"] for s in checks} == {"cpu", "openvino:device_type=CPU"}
    assert {lat["provider"] for lat in data["candidates"][0]["latency"]} == {"cpu", "openvino:device_type=CPU"}
    assert data["written"] and (tmp_path / "tiny.int8.onnx").is_file()
