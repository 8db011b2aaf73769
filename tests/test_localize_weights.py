"""Localisation with the weights in memory once: its CPU sessions take the weights parity shared
with the eager model, find what they find without sharing, and hold no second copy (peak RSS)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from onnxtax.parity import check_parity
from tests.models.stack import write_stack

ROOT = Path(__file__).resolve().parents[1]

def _stack(tmp_path: Path, width: int, what: str) -> tuple[str, Path, int]:
    """The spec of the eager model with one parameter of layers.1 changed, the .onnx of the
    unchanged model, and the bytes of weights."""
    source, path, _ = write_stack(tmp_path, width, 3, what=what)
    return f"{source}:build_wrong", path, 3 * (width * width + width) * 4


def _same_finding(a: dict, b: dict) -> None:
    """Equal but for where the sessions got the weights and FP32 rounding (no pre-packing when shared)."""
    numbers = {"duration_s", "notes", "session_weights", "summary", "origin_detail", "first", "trail", "weights"}
    assert {k: v for k, v in a.items() if k not in numbers} == {k: v for k, v in b.items() if k not in numbers}
    for pa, pb in zip([a["first"]] + a["trail"], [b["first"]] + b["trail"], strict=True):
        assert {k: v for k, v in pa.items() if not isinstance(v, float)} == {
            k: v for k, v in pb.items() if not isinstance(v, float)}
        np.testing.assert_allclose(pa["max_abs_diff"], pb["max_abs_diff"], rtol=1e-3)
    assert [(w["initializer"], w["parameter"]) for w in a["weights"]] == [
        (w["initializer"], w["parameter"]) for w in b["weights"]]
    for wa, wb in zip(a["weights"], b["weights"]):
        assert wa["max_abs_diff"] == wb["max_abs_diff"]  # read from the file either way: exact


def test_localisation_finds_the_same_with_and_without_shared_weights(tmp_path):
    spec, path, _ = _stack(tmp_path, 96, "weight")
    found = {}
    for mode in ("always", "never"):
        report = check_parity(spec, path, ["x:batch,96"], share_weights=mode, samples=1, dims={"batch": [3]},
                              localize=True)
        assert not report.passed
        found[mode] = report.providers[0].localization.to_dict()
    shared, own = found["always"], found["never"]
    assert shared["status"] == "localized" and shared["module"] == "layers.1"
    assert shared["node"] == "/layers.1/Gemm" and shared["origin"] == "local"
    # the changed weight is not shared (its bytes differ): read from the file and named
    assert shared["weights"][0]["initializer"] == "layers.1.weight"
    assert shared["session_weights"] == "shared" and own["session_weights"] == "file"
    assert any("took the 2 weight tensors parity shared" in n for n in shared["notes"])
    assert any("read the weights from the file" in n for n in own["notes"])
    _same_finding(shared, own)


CHILD = r'''
import json, sys
import numpy as np, onnxruntime, torch  # imported before the baseline: the ratio is about localisation
from onnxtax.core import load_model
from onnxtax.parity import localize
from onnxtax.core import ProviderRequest
from onnxtax.core import InputSpec
from onnxtax.core.sharing import share_weights

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

spec, path, width = sys.argv[1], sys.argv[2], int(sys.argv[3])
module = load_model(spec).module
shared = share_weights(path, module)  # what parity made and passes on
x = np.random.default_rng(0).standard_normal((2, width)).astype(np.float32)
out = {}
for mode, weights in (("shared", shared), ("file", None)):
    base = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS: the peak of what follows
    loc = localize(module, path, {"x": x}, specs=[InputSpec("x", ("batch", width))], mapping={"x": "x"},
                   request=ProviderRequest("CPUExecutionProvider"), rtol=1e-4, atol=1e-5, shared_weights=weights)
    out[mode] = {"added": status("VmHWM") - base, "module": loc.module, "session_weights": loc.session_weights}
print(json.dumps(out))
'''


def test_localisation_with_shared_weights_holds_no_second_copy(tmp_path):
    """A 100 MB model whose eager bias of layers.1 differs from the file: every weight is shared.
    Localising adds ORT's own working memory with sharing (measured 0.15x of the weights here), a
    whole copy and more reading them from the file (1.34x)."""
    width = 2896  # 3 x 33.5 MB
    spec, path, weights = _stack(tmp_path, width, "bias")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(CHILD), spec, str(path), str(width)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    shared, own = out["shared"], out["file"]
    assert shared["module"] == own["module"] == "layers.1"
    assert (shared["session_weights"], own["session_weights"]) == ("shared", "file")
    assert own["added"] / weights >= 0.8, out  # the measurement sees a copy of the weights when there is one
    assert shared["added"] / weights <= 0.25, f"localisation added {shared['added'] / weights:.2f}x the weights: {out}"
