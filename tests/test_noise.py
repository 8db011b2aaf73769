"""The tolerance from the model's own noise (onnxtax.core.noise, onnxtax.core.compare.ToleranceRule):
measured without holding the model twice, applied per output and dtype, reported, and still
failing what it must. A correct float16 model passes export and parity with defaults, and a 1%
change of one of its weights is still caught."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from onnxtax.core.compare import OutputStats, ToleranceRule, compare_arrays, noise_factor_for
from onnxtax.core.defaults import PARITY_NOISE_CAP, PARITY_NOISE_FACTOR, PARITY_NOISE_FACTOR_HALF
from onnxtax.core.noise import float64_modules, float64_outputs, relative_noise

MODELS = '''
import torch
from torch import nn


class Half(nn.Sequential):
    """A float16 model: Linear, GELU, Linear, all in float16."""

    def __init__(self, bump: float = 1.0):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            super().__init__(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 16))
        with torch.no_grad():
            self[2].weight.mul_(bump)
        self.half().eval()


def half_bumped():
    """The same model with its second layer's weight 1% larger."""
    return Half(1.01)


class Float32Only(nn.Module):
    """A forward that refuses any dtype but float32: no float64 run is possible."""

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.fc = nn.Linear(8, 4)

    def forward(self, x):
        if x.dtype != torch.float32:
            raise TypeError("float32 only")
        return self.fc(x)


class Residual(nn.Module):
    """x + fc2(gelu(fc1(norm(x)))): at input scale 0.1 the noisy branch is the output, at 1 the
    exact x dominates it, so its noise relative to the output differs by sample."""

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.norm, self.fc1, self.fc2 = nn.LayerNorm(64), nn.Linear(64, 256), nn.Linear(256, 64)

    def forward(self, x):
        return x + self.fc2(nn.functional.gelu(self.fc1(self.norm(x))))
'''


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from onnxtax.export import export_model

    root = tmp_path_factory.mktemp("noise-models")
    (root / "noise_models.py").write_text(MODELS)
    out = {"file": root / "noise_models.py"}
    for exporter in ("dynamo", "torchscript"):
        path = root / f"half.{exporter}.onnx"
        result = export_model(f"{root / 'noise_models.py'}:Half", path, ["x:batch,16:float16"], exporter=exporter)
        assert result, result.error  # the smoke run holds float16 to float16's own rounding
        out[exporter] = path
    path = root / "f32.onnx"
    assert export_model(f"{root / 'noise_models.py'}:Float32Only", path, ["x:batch,8"], exporter="torchscript")
    out["f32"] = path
    path = root / "residual.onnx"
    assert export_model(f"{root / 'noise_models.py'}:Residual", path, ["x:batch,seq,64"], exporter="torchscript")
    out["residual"] = path
    return out


def test_float64_run_converts_one_module_at_a_time_and_restores_the_same_tensors():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8)).eval()
    model[2].weight = model[0].weight  # tied: converted once, restored once
    before = {name: (t.data_ptr(), t.dtype) for name, t in model.state_dict(keep_vars=True).items()}
    seen = []
    with float64_modules(model):
        # registered after the conversion's own hooks: it sees the second layer as it runs
        probe = model[2].register_forward_pre_hook(lambda m, args: seen.append((m.weight.dtype, model[0].bias.dtype)))
        model(torch.randn(2, 8, dtype=torch.float64))
        probe.remove()
    # inside the second layer: its own (tied) weight is float64, the first layer's bias is float32 again
    assert seen == [(torch.float64, torch.float32)]
    assert {name: (t.data_ptr(), t.dtype) for name, t in model.state_dict(keep_vars=True).items()} == before
    assert not model[0]._forward_pre_hooks and not model[0]._forward_hooks


FLOAT64_CHILD = r'''
import sys
import torch
from onnxtax.core.noise import float64_outputs

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

torch.manual_seed(0)
model = torch.nn.Sequential(*[torch.nn.Linear(2048, 2048) for _ in range(6)]).eval()
x = torch.randn(8, 2048)
with torch.no_grad():
    model(x)
base = status("VmHWM")
exact, why = float64_outputs(model, [x])
assert why is None
print((status("VmHWM") - base) / 2**20)
'''


def test_the_float64_run_holds_a_few_blocks_not_a_float64_copy_of_the_weights():
    """6 x Linear(2048) = 100 MB of float32 weights: a float64 copy would be 200 MB, one layer in
    float64 33 MB; block by block the run adds a few 4 MB blocks (measured 5 MB here)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", FLOAT64_CHILD], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
                              "PYTHONPATH": str(__import__("pathlib").Path(__file__).resolve().parents[1])})
    assert out.returncode == 0, out.stderr[-2000:]
    added_mb = float(out.stdout.strip().splitlines()[-1])
    assert added_mb < 24, f"the float64 run added {added_mb:.0f} MB"


def test_noise_is_the_models_own_rounding_and_none_when_there_is_none():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 8)).eval()
    x = torch.randn(4, 256)
    with torch.no_grad():
        eager = [model(x).numpy()]
    exact, why = float64_outputs(model, [x])
    assert why is None and exact[0].dtype == np.float64
    (noise,) = relative_noise(eager, exact)
    assert 1e-9 < noise < 1e-5  # float32 rounding: some, and small
    assert relative_noise([np.zeros((2, 3), np.float32)], [np.zeros((2, 3))]) == [None]  # no scale
    assert relative_noise([np.arange(4)], [np.arange(4)]) == [None]  # integers are exact


def test_a_model_that_cannot_run_in_float64_says_why():
    from noise_models import Float32Only  # on sys.path through the fixture below

    model = Float32Only()
    exact, why = float64_outputs(model, [torch.randn(2, 8)])
    assert exact is None and "float32 only" in why


@pytest.fixture(autouse=True)
def _models_on_path(models, monkeypatch):
    monkeypatch.syspath_prepend(str(models["file"].parent))


def test_the_noise_term_widens_atol_and_rtol_and_the_floor_stays():
    b = np.linspace(-1, 1, 101)
    a = b + 3e-5  # 3e-5 off everywhere: fails the fixed floor (1e-5 x rms ~0.58 + 1e-4 x |b|) near zero
    assert not compare_arrays(a, b)
    stats = compare_arrays(a, b, noise_rel=1e-6)  # float64 arrays: k = 64 -> 6.4e-5 x rms
    assert stats and stats.noise_decides and stats.atol_effective == pytest.approx(64e-6 * stats.scale)
    assert stats.rtol_effective == 1e-4  # 64 x 1e-6 is below the rtol floor
    assert compare_arrays(b * (1 + 5e-4), b, noise_rel=1e-5).rtol_effective == pytest.approx(64e-5)
    assert "64 x the model's own noise 1e-06" in stats.tolerance_text()
    assert not compare_arrays(a, b, noise_rel=1e-6, noise_factor=0)  # the fixed floors alone
    quiet = compare_arrays(b + 1e-7, b, noise_rel=1e-9)  # noise below the floor: the floor decides
    assert quiet and not quiet.noise_decides
    capped = OutputStats(1e-4, 1e-5, noise_rel=1.0, noise_factor=64)
    capped.update(b, b)
    assert capped.noise_term == PARITY_NOISE_CAP


def test_the_factor_follows_the_dtype_the_model_computes_in():
    assert noise_factor_for("float32", None) == PARITY_NOISE_FACTOR == 64
    assert noise_factor_for("torch.float16", None) == noise_factor_for("bfloat16", None) == PARITY_NOISE_FACTOR_HALF
    assert noise_factor_for("float16", 5) == 5
    rule = ToleranceRule(noise={"y": 1e-4, "ids": None}, dtypes={"y": "bfloat16"}, per_output={"z": (0.1, 0.2)})
    assert rule.stats("y", np.zeros(2, np.float32)).noise_factor == 12  # bf16 arrives in float32 arrays
    assert rule.stats("ids", np.zeros(2, np.int64)).rtol == 0  # integers: exact
    z = rule.stats("z", np.zeros(2, np.float32))
    assert (z.rtol, z.atol, z.noise_rel) == (0.1, 0.2, None)  # --tolerance: exactly that, no noise


def test_a_float16_model_passes_with_defaults_and_a_one_percent_change_is_caught(models, cli):
    spec = f"{models['file']}:Half"
    for exporter in ("dynamo", "torchscript"):
        ran = cli("parity", spec, models[exporter], "--json", "-")
        assert ran.returncode == 0, ran.stdout + ran.stderr
        report = json.loads(ran.stdout)
        noise = report["tolerance"]["noise"]["output"]
        assert 1e-5 < noise < 1e-2  # float16's own rounding, far above float32's
        case = report["providers"][0]["cases"][0]
        assert case["noise_factor"] == 12 and case["noise_decides"] and case["source_dtype"] == "float16"
        wrong = cli("parity", f"{models['file']}:half_bumped", models[exporter])
        assert wrong.returncode == 1, wrong.stdout
        assert "12 x the model's own noise" in wrong.stdout and "parity FAILED" in wrong.stdout


def test_the_report_states_the_noise_and_the_rule(models, cli):
    ran = cli("parity", f"{models['file']}:Half", models["torchscript"])
    assert ran.returncode == 0
    assert "model's own rounding noise (eager vs float64 at batch=7, largest of 3 samples, relative to rms): output" in ran.stdout
    assert "12 x noise sets the tolerance" in ran.stdout
    assert "|a-b| <= max(1e-05, 12*noise)*rms + max(0.0001, 12*noise)*|b|" in ran.stdout
    fixed = cli("parity", f"{models['file']}:Half", models["torchscript"], "--noise-factor", "0", "--json", "-")
    data = json.loads(fixed.stdout)
    assert data["tolerance"]["noise_factor"] == 0 and data["tolerance"]["noise"] == {}
    assert fixed.returncode == 1  # float16 against float32-sized floors: the false alarm the noise term removes
    bad = cli("parity", f"{models['file']}:Half", models["torchscript"], "--noise-factor", "-1")
    assert bad.returncode == 2 and "--noise-factor -1" in bad.stderr


def test_without_a_float64_run_the_fixed_floors_apply_and_the_report_says_why(models, cli):
    ran = cli("parity", f"{models['file']}:Float32Only", models["f32"], "--json", "-")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    data = json.loads(ran.stdout)
    assert "float32 only" in data["tolerance"]["noise_note"]
    assert any("own noise was not measured" in n and "fixed floors" in n for n in data["notes"])


def test_the_export_smoke_run_takes_k_from_the_dtype_the_model_computed_in():
    """A bfloat16 output reaches the smoke comparison as float32; its k stays the half-precision one."""
    from onnxtax.export.smoke import _compare_smoke

    ref = np.linspace(1.0, 2.0, 100).astype(np.float32)
    got = ref * np.float32(1 + 3e-3)
    assert _compare_smoke(ref, got, 1e-4, "torch.float32") is None
    assert _compare_smoke(ref, got) is not None, "without the noise, the smoke floors catch 3e-3"
    problem = _compare_smoke(ref, got, 1e-4, "torch.bfloat16")
    assert problem is not None and "12 x the model's own noise" in problem, problem


def test_the_noise_is_the_largest_over_the_samples_of_one_scale_each(models):
    """Measured on sample 0 alone, a residual block's noise was 3x too small for sample 1 (scale
    0.1): a 4096-wide one sat at 0.52 of its tolerance on a correct export."""
    from onnxtax.core.loading import load_model
    from onnxtax.core.specs import SampleRecipe, parse_input_specs
    from onnxtax.parity import check_parity
    from onnxtax.parity.shapes import ShapePlan, sample_inputs

    report = check_parity(f"{models['file']}:Residual", models["residual"])
    assert report.passed, report.failures
    assert report.noise_shape == "batch=7,seq=7" and report.noise_samples == 3
    module = load_model(f"{models['file']}:Residual").module.eval()
    specs = parse_input_specs(["x:batch,seq,64"])
    plan = ShapePlan("batch=7,seq=7", {"batch": 7, "seq": 7}, 3)
    per_sample = []
    for k in range(3):
        x = torch.from_numpy(sample_inputs(plan, specs, SampleRecipe(report.seed, {}), k)["x"])
        with torch.no_grad():
            y = module(x).numpy()
        exact, why = float64_outputs(module, [x])
        per_sample.append(relative_noise([y], exact)[0])
    assert per_sample[1] > 2 * per_sample[0], per_sample
    assert report.rule.noise["output"] == pytest.approx(max(per_sample), rel=1e-6)
    assert report.to_dict()["tolerance"]["noise_samples"] == 3
