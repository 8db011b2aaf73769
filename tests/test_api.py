"""The public API: every advertised name resolves, and the parts compose into a script that
reuses them (load once, resolve inputs once, run two stages) without the CLI."""

from __future__ import annotations

import subprocess
import sys

import onnxtax
from tests.models import tiny


def test_every_public_name_resolves_and_import_stays_light():
    for name in onnxtax.__all__:
        assert getattr(onnxtax, name) is not None, name
    proc = subprocess.run([sys.executable, "-c", "import sys, onnxtax; "
                           "print(','.join(m for m in ('torch', 'onnx', 'onnxruntime', 'numpy') if m in sys.modules))"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr


def test_check_failed_is_a_failed_check_not_a_usage_error():
    assert not issubclass(onnxtax.CheckFailed, onnxtax.OnnxtaxError)
    assert onnxtax.CheckFailed("x").exit_code == 1 and onnxtax.InputSpecError("x").exit_code == 2


def test_a_script_reuses_the_parts(tmp_path):
    model = onnxtax.load_model(tiny.spec("Tiny"))
    result = onnxtax.export_model(model, tmp_path / "tiny.onnx", ["x:batch,16"], exporter="torchscript")
    assert result and result.exit_code == 0
    inputs = onnxtax.resolve_inputs(tmp_path / "tiny.onnx")
    assert inputs.source == "manifest" and inputs.export_sizes == {"batch": 3}
    parity = onnxtax.check_parity(model, tmp_path / "tiny.onnx", inputs, samples=1)
    bench = onnxtax.run_bench(model, tmp_path / "tiny.onnx", inputs, batch_sizes=[1], min_time=0.01, warmup=1,
                              cold_start=False)
    assert parity and bench and parity.exit_code == bench.exit_code == 0
    assert parity.input_source == bench.input_source == "manifest"
