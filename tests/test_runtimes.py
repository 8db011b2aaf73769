"""`onnxtax runtimes`, `export --target-ort`, `lint-ops --target-ort`: the artifact on the
onnxruntime releases production runs, each in a real cached virtualenv (built once per
machine; the session fixture builds onnxruntime 1.16.3 if it is not cached yet, ~25 s)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnx
import pytest

from onnxtax.render.runtimes import runtimes_junit_suites
from onnx import TensorProto, helper

from onnxtax.export import export_model
from onnxtax.core.ort_compat import LIMITS, limits_for, min_ir_for_opset, target_problems
from onnxtax.runtimes.envs import MARKER, ensure_env, env_dir, find_env, resolve_cache_dir
from onnxtax.runtimes import check_runtimes
from tests.conftest import run_cli

OLD = "1.16.3"  # refuses IR 10 ("max supported IR version: 9"), loads opset <= 19

MLP = """
import torch

class Net(torch.nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))

    def forward(self, x):
        return self.body(x)

def other():
    return Net(seed=1)
"""


@pytest.fixture(scope="session")
def runtime_cache() -> Path:
    """The machine's runtime cache ($ONNXTAX_RUNTIMES_DIR or ~/.cache/onnxtax/runtimes), with
    the old release ready: built at most once per session, and reused by later sessions."""
    cache = resolve_cache_dir()
    ensure_env(OLD, cache)
    return cache


@pytest.fixture
def rt_env(runtime_cache):
    return {"ONNXTAX_RUNTIMES_DIR": str(runtime_cache)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, runtime_cache):
    """One tiny MLP exported twice (the dynamo default, and --target-ort 1.16): every test reads them."""
    folder = tmp_path_factory.mktemp("runtimes")
    mlp = folder / "mlp_net.py"
    mlp.write_text(MLP)
    env = {"ONNXTAX_RUNTIMES_DIR": str(runtime_cache)}
    plain, target = folder / "plain.onnx", folder / "for116.onnx"
    assert export_model(f"{mlp}:Net", plain, ["x:batch,6"])  # in-process: a torch import saved
    proc = run_cli("export", f"{mlp}:Net", "-o", target, "-i", "x:batch,6", "--target-ort", "1.16", "--json", "-",
                   env=env)
    assert proc.returncode == 0, proc.stderr
    return {"spec": f"{mlp}:Net", "other": f"{mlp}:other", "plain": plain, "target": target,
            "target_result": json.loads(proc.stdout), "folder": folder}


def _json(proc) -> dict:
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout)


def test_ir10_export_fails_on_old_release_then_passes_with_target_ort(tmp_path, exported, rt_env):
    spec, plain, target = exported["spec"], exported["plain"], exported["target"]
    assert onnx.load(str(plain)).ir_version == 10  # what the dynamo exporter writes at opset 18

    proc = run_cli("runtimes", plain, spec, "--ort", OLD, "--json", "-", env=rt_env)
    assert proc.returncode == 1, proc.stderr
    report = _json(proc)
    row = report["results"][0]
    assert row["status"] == "load-error"
    assert "Unsupported model IR version: 10, max supported IR version: 9" in row["message"]  # its own words
    assert "Unsupported model IR version" in row["detail"] and row["ort"] == OLD
    assert report["minimum_passing"] is None and not report["passed"]
    assert any("IR version 10" in p for p in row["predicted"])  # the static table agreed

    result = exported["target_result"]
    checks = {c["name"]: c for c in result["checks"]}
    assert checks["target_runtime"]["passed"] is True, checks["target_runtime"]
    assert result["ir_version"] == 8 and result["opset"] == 18
    manifest = json.loads((exported["folder"] / "for116.manifest.json").read_text())
    assert manifest["ir_version"] == 8
    assert manifest["target_runtimes"][0]["series"] == "1.16"
    assert manifest["runtime_matrix"] == [{"ort": OLD, "provider": "CPUExecutionProvider", "status": "passed",
                                           "message": None}]

    junit, md = tmp_path / "rt.xml", tmp_path / "rt.md"
    proc = run_cli("runtimes", target, spec, "--ort", OLD, "--json", "-", "--junit", junit,
                   "--markdown", md, "--record", env=rt_env)
    assert proc.returncode == 0, proc.stderr
    report = _json(proc)
    assert report["passed"] and report["minimum_passing"] == OLD
    assert report["reference"]["kind"] == "eager"
    row = report["results"][0]
    assert row["status"] == "passed" and len(row["cases"]) == 3  # parity's shapes: batch 1, 4, 7
    assert all(c["max_abs_diff"] < 1e-5 for c in row["cases"])
    assert 'testsuite name="runtimes ort-1.16.3 cpu"' in junit.read_text()
    assert f"| {OLD} | pass |" in md.read_text()
    recorded = json.loads((exported["folder"] / "for116.manifest.json").read_text())["runtime_matrix"]
    assert recorded == [{"ort": OLD, "provider": "CPUExecutionProvider", "status": "passed", "message": None}]
    assert run_cli("verify", target).returncode == 0  # checksums untouched

    # the same file against a model with other weights: loads, and fails on values
    report = check_runtimes(target, [OLD], exported["other"], cache_dir=rt_env["ONNXTAX_RUNTIMES_DIR"], offline=True)
    row = report.results[0]
    assert not report and row.status == "failed" and "outside" in row.cases[0].reason


def _gelu_model(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    graph = helper.make_graph([helper.make_node("Gelu", ["x"], ["y"], name="gelu_0")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_lint_target_ort_refuses_a_later_op_before_any_install(tmp_path):
    empty_cache = tmp_path / "cache"
    model = _gelu_model(tmp_path / "gelu.onnx")
    proc = run_cli("lint-ops", model, "--target-ort", "1.16", "--json", "-",
                   env={"ONNXTAX_RUNTIMES_DIR": str(empty_cache)})
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    found = [f for f in report["findings"] if f["rule"] == "target-runtime"]
    op = next(f for f in found if f["details"]["kind"] == "op")
    assert op["op_type"] == "Gelu" and op["node"] == "gelu_0" and op["severity"] == "error"
    assert "since opset 20" in op["message"] and "1.16" in op["message"]
    assert any(f["details"]["kind"] == "opset" and "opset 20" in f["message"] for f in found)
    assert report["targets"]["ort"]["max_opset"] == 19
    assert not empty_cache.exists()  # nothing was installed, nothing was even created

    # the release that has Gelu: clean
    proc = run_cli("lint-ops", model, "--target-ort", "1.17", "--json", "-")
    assert not [f for f in json.loads(proc.stdout)["findings"] if f["rule"] == "target-runtime"]


def test_second_run_installs_nothing(exported, runtime_cache):
    marker = env_dir(runtime_cache, OLD) / MARKER
    before = marker.stat().st_mtime_ns
    report = check_runtimes(exported["target"], [OLD], cache_dir=runtime_cache, offline=True).to_dict()
    assert report["passed"]
    assert report["environments"] == [{"version": OLD, "path": str(env_dir(runtime_cache, OLD)),
                                       "built_now": False, "build_s": None, "numpy": "1.26.4"}]
    assert report["reference"]["kind"] == "onnxruntime"  # no spec: the installed release is the reference
    assert marker.stat().st_mtime_ns == before


def test_offline_without_the_release_is_a_one_line_usage_error(tmp_path):
    path = _gelu_model(tmp_path / "g.onnx")
    proc = run_cli("runtimes", path, "--ort", "1.17.3", "--offline", "--cache-dir", tmp_path / "none")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "1.17.3 is not in the runtime cache" in proc.stderr and "--offline" in proc.stderr
    proc = run_cli("runtimes", path, "--ort", "1.16")
    assert proc.returncode == 2 and "not an exact release" in proc.stderr


def test_a_half_built_virtualenv_is_not_ready(tmp_path):
    folder = env_dir(tmp_path, OLD)
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "python").symlink_to(os.path.realpath(os.sys.executable))
    assert find_env(tmp_path, OLD) is None  # no marker: a build that never finished
    (folder / MARKER).write_text(json.dumps({"onnxruntime": OLD}))
    assert find_env(tmp_path, OLD) is not None


def test_provider_missing_from_the_package_is_reported_not_faked(exported, runtime_cache):
    report = check_runtimes(exported["target"], [OLD], exported["spec"], providers=["cpu", "openvino:device_type=CPU"],
                            samples=1, cache_dir=runtime_cache, offline=True)
    by = {r.short: r for r in report.results}
    assert by["openvino"].status == "unavailable" and "not in this onnxruntime package (it has" in by["openvino"].message
    assert by["cpu"].status == "passed" and report.passed
    assert [s.cases[0].name for s in runtimes_junit_suites(report)] == ["load", "load"]
    assert runtimes_junit_suites(report)[1].cases[0].skipped


def test_limits_table():
    assert limits_for("1.16").max_ir == 9 and limits_for("1.16.3").max_opset == 19
    assert limits_for("1.18").max_ir == 10
    assert min_ir_for_opset(18) == 8 and min_ir_for_opset(21) == 10
    series = [tuple(map(int, r.series.split("."))) for r in LIMITS]
    assert series == sorted(series)
    with pytest.raises(Exception, match="no opset/IR limits known"):
        limits_for("1.3")
    model = onnx.load(str(_gelu_model(Path(os.environ.get("TMPDIR", "/tmp")) / "onnxtax-gelu-limits.onnx")))
    assert [p.kind for p in target_problems(model, limits_for("1.16"))] == ["opset", "op"]
    assert target_problems(model, limits_for("1.17")) == []


@pytest.mark.runtime_sweep
@pytest.mark.parametrize("version", ["1.15.1", "1.17.3", "1.18.1", "1.20.1", "1.22.0"])
def test_sweep_target_export_loads_on_each_release(tmp_path, write_model, version):
    mlp = write_model(MLP, "mlp_net")
    path = tmp_path / "m.onnx"
    proc = run_cli("export", f"{mlp}:Net", "-o", path, "-i", "x:batch,6", "--target-ort", version, timeout=900)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("runtimes", path, f"{mlp}:Net", "--ort", version, "--json", "-")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["results"][0]["status"] == "passed"


def test_ci_runtimes_stage_and_merge_into_model_release_provider(tmp_path, exported, runtime_cache):
    from onnxtax.ci import run_ci
    from onnxtax.ci import load_config

    (tmp_path / "onnxtax.toml").write_text(f"""
target_ort = "1.16"
exporter = "torchscript"    # milliseconds; the dynamo exporter's IR 10 is the test above

[lint]
source = false

[parity]
providers = ["cpu"]
samples = 1

[runtimes]
ort = ["{OLD}"]
cache_dir = "{runtime_cache}"
offline = true

[models.mlp]
spec = "{exported['spec']}"
inputs = ["x:batch,6"]
output = "onnx/mlp.onnx"
""")
    report = run_ci(load_config(tmp_path / "onnxtax.toml"), reports_dir=tmp_path / "reports")
    assert report.passed, report.to_dict()
    run = report.models[0]
    assert any(c.name == "target_runtime" and c.passed for c in run.stages["export"].result.checks)
    stage = run.stages["runtimes"]
    assert stage.status == "passed" and stage.result.results[0].ort == OLD
    model_json = json.loads((tmp_path / "reports" / "mlp.json").read_text())
    assert model_json["stages"]["runtimes"]["result"]["results"][0]["status"] == "passed"
    junit = (tmp_path / "reports" / "junit.xml").read_text()
    assert f'classname="onnxtax.mlp.runtimes.ort-{OLD}.cpu"' in junit
    assert f"| mlp | {OLD} | pass |" in (tmp_path / "reports" / "summary.md").read_text()

    proc = run_cli("report", "merge", tmp_path / "reports", "-o", tmp_path / "merged")
    assert proc.returncode == 0, proc.stderr
    matrix = json.loads((tmp_path / "merged" / "matrix.json").read_text())
    assert [(r["model"], r["ort"], r["provider"], r["verdict"]) for r in matrix["runtime_matrix"]] == [
        ("mlp", OLD, "cpu", "passed")]
    assert f"| mlp | {OLD} | cpu |" in (tmp_path / "merged" / "matrix.md").read_text()


def test_a_second_process_waits_for_the_build_and_reuses_it(tmp_path):
    """The lock: while one process builds a release, another waits, then takes the finished
    virtualenv instead of building it again (the build is simulated by this test holding the lock)."""
    import subprocess
    import sys
    import time

    from onnxtax.core.paths import BuildLock

    child = ("import sys; from pathlib import Path; from onnxtax.runtimes.envs import ensure_env; "
             "env = ensure_env('1.16.3', Path(sys.argv[1]), say=lambda m, *a: print(m, flush=True)); "
             "print('built_now', env.built_now)")
    with BuildLock(tmp_path / ".ort-1.16.3-py311.lock", f"onnxruntime {OLD}", lambda *_: None):
        proc = subprocess.Popen([sys.executable, "-c", child, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                                env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
        first = proc.stdout.readline()
        assert "waiting for another process that is building it" in first
        folder = env_dir(tmp_path, OLD)  # what the other build leaves when it finishes
        (folder / "bin").mkdir(parents=True)
        (folder / "bin" / "python").symlink_to(os.path.realpath(sys.executable))
        (folder / MARKER).write_text(json.dumps({"onnxruntime": OLD, "numpy": "1.26.4"}))
        time.sleep(0.2)
        assert proc.poll() is None  # still waiting while the lock is held
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "built_now False" in out and "pip install" not in out


KEYWORD_ONLY = """
import torch


class Scaled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(6, 2)

    def forward(self, x, *, scale):
        return self.fc(x) * scale
"""


def test_keyword_only_inputs_reach_the_runtime_matrix(tmp_path, runtime_cache):
    """The eager reference of the matrix calls forward(x, *, scale) by name, as parity does (it
    used to pass every input positionally and fail on the model before any release ran)."""
    (tmp_path / "kw.py").write_text(KEYWORD_ONLY)
    spec = f"{tmp_path / 'kw.py'}:Scaled"
    out = tmp_path / "kw.onnx"
    assert export_model(spec, out, ["x:batch,6", "scale:batch,1"], exporter="torchscript", target_ort="1.16")
    report = check_runtimes(out, [OLD], spec, samples=1, cache_dir=runtime_cache)
    assert report.passed, report.failures
    assert report.reference["kind"] == "eager"
