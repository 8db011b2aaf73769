"""`onnxtax serve-bench`: real hosts (a Python process with torch or onnxruntime, a Node.js process
with onnxruntime-node from npm) served by the open-loop generator at tiny loads for fractions of a
second. The Node.js install is `make test`'s setup (make node-env); the session fixture installs
it into the same cache when it is missing, so a clean cache works too. Performance figures are
not asserted here (benchmarks/serve_floor.py measures them): only what each figure is made of."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from onnxtax.core.errors import ConfigError
from onnxtax.export import export_model
from onnxtax.serve.node_env import (DEFAULT_VERSION, MARKER, NodeEnvError, ensure_node_env, env_dir, find_env,
                                    resolve_cache_dir)

MLP = """
import torch

class Net(torch.nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))

    def forward(self, x):
        return torch.softmax(self.body(x), dim=-1)

def retrained():
    # the same architecture with other weights: the artifact a deploy step took from another checkpoint
    return Net(seed=1)
"""

FAST = ["--duration", "0.4", "--warmup", "0.1", "--samples", "1"]


@pytest.fixture(scope="session")
def node_cache() -> Path:
    """The machine's Node.js cache ($ONNXTAX_NODE_DIR or ~/.cache/onnxtax/node) with onnxruntime-node ready."""
    cache = resolve_cache_dir()
    ensure_node_env(DEFAULT_VERSION, cache)
    return cache


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    (folder / "mlp_net.py").write_text(MLP)
    onnx_path = folder / "net.onnx"
    assert export_model(f"{folder / 'mlp_net.py'}:Net", onnx_path, ["x:batch,6"], output_names=["probs"])
    return {"spec": f"{folder / 'mlp_net.py'}:Net", "other": f"{folder / 'mlp_net.py'}:retrained",
            "onnx": onnx_path, "folder": folder}


def _json(ran) -> dict:
    assert ran.stdout.strip(), ran.stderr
    return json.loads(ran.stdout)


# --------------------------------------------------------------------------- the Node.js runtime
def test_onnxruntime_node_is_installed_once_and_reused_offline(node_cache, tmp_path):
    env = find_env(node_cache, DEFAULT_VERSION)
    assert env is not None and (env.node_path / "onnxruntime-node" / "package.json").is_file()
    again = ensure_node_env(DEFAULT_VERSION, node_cache, offline=True)
    assert again.path == env.path and not again.built_now
    # an install that never finished (no marker) is not trusted, and offline will not make one
    half = env_dir(tmp_path, DEFAULT_VERSION) / "node_modules" / "onnxruntime-node"
    half.mkdir(parents=True)
    (half / "package.json").write_text("{}")
    assert find_env(tmp_path, DEFAULT_VERSION) is None
    with pytest.raises(NodeEnvError, match="--offline forbids installing it") as err:
        ensure_node_env(DEFAULT_VERSION, tmp_path, offline=True)
    assert "ONNXTAX_NODE_DIR" in err.value.hint
    assert json.loads((env.path / MARKER).read_text())["onnxruntime-node"] == DEFAULT_VERSION


# --------------------------------------------------------------------------- the three paths
def test_three_paths_under_load_with_curves_memory_cold_start_cost_and_a_failing_gate(cli, served, node_cache,
                                                                                     tmp_path):
    plot, markdown = tmp_path / "curve.png", tmp_path / "serve.md"
    ran = cli("serve-bench", served["spec"], served["onnx"], "--rates", "300,600", "--max-batch", "4",
              "--max-wait-ms", "1", "--cold-start-runs", "1", "--price-per-hour", "0.1", "--slo", "p99=400ms",
              "--min-qps-at-slo", "1e9", "--max-p99-ms", "ort=1000@300", "--plot", plot, "--markdown", markdown,
              "--json", "-", *FAST)
    assert ran.returncode == 1, ran.stderr
    data = _json(ran)
    assert [p["id"] for p in data["paths"]] == ["eager", "ort", "node"]
    assert data["slo"] == {"percentile": "p99", "ms": 400.0}
    assert not data["cores"]["shared"] and not set(data["cores"]["server"]) & set(data["cores"]["generator"])
    for p in data["paths"]:
        assert p["status"] == "measured", p["reason"]
        (curve,) = p["curves"]
        assert curve["policy"] == {"max_batch": 4, "max_wait_ms": 1.0, "threads": 1}
        assert [lv["offered_qps"] for lv in curve["levels"]] == [300.0, 600.0]
        for lv in curve["levels"]:
            assert 0 < lv["p50_ms"] <= lv["p95_ms"] <= lv["p99_ms"] <= lv["max_ms"]
            assert lv["completed"] == lv["requests"] > 0 and lv["slo_met"]
            assert 1 <= lv["batch_mean"] <= lv["batch_max"] <= 4
            assert lv["rss_mb"] > 10 and 0 <= lv["host_cores"] <= len(data["cores"]["server"]) + 0.2
        assert p["best"]["qps_at_slo"] == 600.0
        assert p["best"]["cost_per_1000"] == pytest.approx(0.1 * len(data["cores"]["server"]) / data["cores"][
            "cpu_count"] / (600 * 3.6), rel=1e-9)
        cold = p["cold_start"]
        assert cold["runs"] == 1 and 0 < cold["ready_s"]["median"] < cold["first_response_s"]["median"]
        assert cold["peak_rss_mb"]["median"] > 10
    eager, ort, node = data["paths"]
    assert eager["correctness"]["status"] == "reference" and "torch" in eager["versions"]
    assert ort["correctness"]["status"] == node["correctness"]["status"] == "passed"
    assert node["correctness"]["cases"] and all(c["status"] == "passed" for c in node["correctness"]["cases"])
    assert node["versions"]["onnxruntime-node"] == DEFAULT_VERSION and "python" not in node["versions"]
    # eager's process holds torch: more memory than ORT's Python process
    assert eager["best"]["level"]["rss_mb"] > ort["best"]["level"]["rss_mb"]
    assert [g["id"] for g in data["generator"]] == ["noop:python", "noop:node"]
    assert {(r["a"], r["b"]) for r in data["ratios"]} == {("ort", "eager"), ("node", "eager"), ("node", "ort")}
    failed = [g for g in data["gates"] if not g["passed"]]
    assert {g["path"] for g in failed} == {"eager", "ort", "node"} and all(g["gate"] == "min_qps_at_slo" for g in failed)
    p99_gate = next(g for g in data["gates"] if g["gate"] == "max_p99_ms")
    assert p99_gate["passed"] and p99_gate["load"] == 300.0 and p99_gate["path"] == "ort"
    assert "gate failed (min_qps_at_slo)" in ran.stderr and "node: 600 rows/s within p99 <= 400 ms" in ran.stderr
    assert "below the minimum 1,000,000,000 rows/s" in ran.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| node | 600 |" in markdown.read_text()


def test_both_hosts_batch_by_the_same_policy(cli, served, node_cache):
    """Constant arrivals 5 ms apart: with a 30 ms wait both hosts fill batches of 4; with no wait
    they answer each request alone when they are idle as it arrives (a busy machine's stalls queue a
    few, which greedy batching then takes together)."""
    ran = cli("serve-bench", served["spec"], served["onnx"], "--paths", "ort,node", "--rates", "200",
              "--arrival", "constant", "--max-batch", "4", "--max-wait-ms", "0,30", "--slo", "p99=900ms",
              "--cold-start-runs", "0", "--no-generator-floor", "--json", "-", *FAST)
    assert ran.returncode == 0, ran.stderr
    for p in _json(ran)["paths"]:
        greedy, waiting = p["curves"]
        assert greedy["policy"]["max_wait_ms"] == 0 and waiting["policy"]["max_wait_ms"] == 30
        (g,), (w,) = greedy["levels"], waiting["levels"]
        assert w["batch_max"] == 4 and w["batch_mean"] > 3, (p["id"], w)
        # greedy never waits for a batch: it batches only what queued while the host was busy
        assert g["batch_mean"] < w["batch_mean"] - 0.5, (p["id"], g)
        # a batch of 4 leaves when its 4th request arrives: its requests waited 15, 10, 5 and 0 ms
        assert w["p50_ms"] > g["p50_ms"] + 2, (p["id"], w, g)


# --------------------------------------------------------------------------- correct in the host
def test_a_host_whose_outputs_differ_from_the_eager_model_fails_naming_the_output(cli, served, node_cache):
    """The artifact served came from other weights than the source (a checkpoint mix-up in a
    deploy step): every host that serves it is named, with the output and the shape."""
    ran = cli("serve-bench", served["other"], served["onnx"], "--paths", "ort,node", "--rates", "300",
              "--max-batch", "4", "--cold-start-runs", "0", "--no-generator-floor", "--json", "-", *FAST)
    assert ran.returncode == 1
    data = _json(ran)
    for p in data["paths"]:
        assert p["correctness"]["status"] == "failed"
        assert p["correctness"]["message"].startswith("output probs differs from the eager model at batch=")
    assert "check failed: node: output probs differs from the eager model" in ran.stderr
    assert not data["passed"] and data["gates"] == []


def test_dtype_and_layout_slips_in_a_host_are_caught_per_output(tmp_path):
    """What a host in another language can get wrong, as its check files would show it: doubles
    where the graph gives floats, bytes that do not make the shape it claims, a transposed layout."""
    from onnxtax.core.compare import ToleranceRule
    from onnxtax.core.specs import InputSpec
    from onnxtax.parity.options import ComparisonOptions
    from onnxtax.parity.shapes import plan_shapes
    from onnxtax.serve.check import CheckCases, compare, read_host_outputs

    expected = np.arange(12, dtype=np.float32).reshape(4, 3) / 7
    plans = plan_shapes([InputSpec("x", ("batch", 6))], {"batch": [4]}, {}, samples=1)
    cases = CheckCases(plans, [{"plan": 0, "sample": 0}] * 3, [[expected]] * 3, ["scores"])
    blob = expected.astype(np.float64).tobytes() + expected.tobytes()[:40] + expected.T.copy().tobytes()
    (tmp_path / "out.bin").write_bytes(blob)
    rows = [{"dtype": "float64", "dims": [4, 3], "offset": 0, "nbytes": 96},
            {"dtype": "float32", "dims": [4, 3], "offset": 96, "nbytes": 40},
            {"dtype": "float32", "dims": [3, 4], "offset": 136, "nbytes": 48}]
    (tmp_path / "out.json").write_text(json.dumps({"cases": [{"error": None, "outputs": [r]} for r in rows]}))
    got = read_host_outputs({"out": str(tmp_path / "out.bin"), "result": str(tmp_path / "out.json")})
    options = ComparisonOptions()
    rule = ToleranceRule(options.rtol, options.atol, options.min_cosine)  # no eager model here: no noise measured

    def check(i, outputs):
        return compare("node", CheckCases(plans, [cases.cases[i]], [[expected]], ["scores"], rule=rule), outputs)

    verdicts = [check(i, [got[i]]) for i in range(3)]
    assert all(v.status == "failed" for v in verdicts)
    assert "dtype float64, source float32" in verdicts[0].message
    assert "40 bytes returned for a float32 tensor of shape [4, 3]" in verdicts[1].message
    assert "shape [3, 4], source [4, 3]" in verdicts[2].message
    assert all(v.message.startswith("output scores") for v in verdicts)
    right = [{"error": None, "outputs": [expected.copy()]}]
    assert check(0, right).status == "passed"


# --------------------------------------------------------------------------- usage errors
@pytest.mark.parametrize("args, message", [
    (["--slo", "p42=3ms"], "--slo 'p42=3ms' needs PERCENTILE=LATENCY"),
    (["--max-batch", "0"], "--max-batch '0': '0' is not a positive integer"),
    (["--paths", "eager,java"], "unknown --paths 'java'"),
    (["--duration", "1", "--warmup", "1"], "leaves nothing of --duration"),
    (["--min-qps-at-slo", "rust=5"], "no path 'rust'"),
    (["--max-p99-ms", "ort=5@fast"], "--max-p99-ms 'ort=5@fast' needs a positive number"),
    (["--rates", "100,-5"], "'-5' is not a positive number"),
    (["--arrival", "burst"], "unknown --arrival 'burst'"),
    (["--max-batch", "1,2,4,8,16", "--max-wait-ms", "0,1,2"], "batching policies"),
    (["--dim", "batch=4"], "the batch axis is one row per request"),
])
def test_bad_flags_are_usage_errors_before_any_work(cli, served, args, message):
    ran = cli("serve-bench", served["spec"], served["onnx"], "--paths", "ort", *args)
    assert ran.returncode == 2, ran.stderr
    assert message in ran.stderr and "fix:" in ran.stderr


def test_node_missing_from_an_offline_cache_is_a_usage_error(cli, served, tmp_path):
    ran = cli("serve-bench", served["spec"], served["onnx"], "--paths", "node", "--offline", "--node-dir", tmp_path)
    assert ran.returncode == 2
    assert "is not in the Node.js cache" in ran.stderr and "--offline forbids installing it" in ran.stderr


# --------------------------------------------------------------------------- ci
CONFIG = """
[models.net]
spec = "mlp_net.py:Net"
inputs = ["x:batch,6"]
output = "net.onnx"

[models.net.parity]
samples = 1

[models.net.serve]
paths = ["ort"]
slo = "p99=500ms"
rates = [300]
max_batch = [4]
duration_s = 0.4
warmup_s = 0.1
generator_floor = false
cold_start_runs = 0
min_qps_at_slo = 250
max_p99_ms = { "ort@300" = 0.000001 }
"""


def test_ci_serve_table_builds_the_options_and_its_stage_gates(served, node_cache):
    from onnxtax.ci import load_config
    from onnxtax.ci.report import StageResult
    from onnxtax.ci.stages import ModelContext, stage_serve

    config_path = served["folder"] / "onnxtax.toml"
    config_path.write_text(CONFIG)
    model = load_config(config_path).models["net"]
    serve = model.serve
    assert serve is not None and serve.paths == ["ort"] and serve.rates == [300.0] and serve.samples == 1
    assert serve.min_qps_at_slo == {"*": 250.0} and serve.max_p99_ms == {"ort@300": 1e-6}
    stage = StageResult("serve")
    stage_serve(ModelContext(model), stage, lambda message: None)
    assert stage.status == "failed" and stage.summary.startswith("within p99 <= 500 ms: ort 300 rows/s; 1/2 gates")
    assert "ort: p99" in stage.error and "at 300 rows/s" in stage.error and "above the limit 1e-06 ms" in stage.error


@pytest.mark.parametrize("line, message", [
    ("max_wait = [2]", "unknown key 'max_wait'"),
    ("arrival = \"burst\"", "must be \"poisson\" or \"constant\""),
    ("slo = \"p99\"", "--slo 'p99' needs PERCENTILE=LATENCY"),
    ("dims = { seq = 8 }", "'seq' names no dynamic axis"),
])
def test_ci_serve_table_errors_name_the_key(served, line, message):
    from onnxtax.ci import load_config

    config_path = served["folder"] / "bad.toml"
    config_path.write_text(CONFIG.replace('slo = "p99=500ms"\n', "") + line + "\n")
    with pytest.raises(ConfigError, match="models.net.serve") as err:
        load_config(config_path)
    assert message in err.value.message


def test_every_serve_option_has_a_config_key():
    import dataclasses

    from onnxtax.ci.config import KEY_ALIASES
    from onnxtax.ci.schema import SERVE
    from onnxtax.parity.options import ComparisonOptions
    from onnxtax.serve import ServeOptions

    own = {f.name for f in dataclasses.fields(ServeOptions)} - {f.name for f in dataclasses.fields(ComparisonOptions)}
    keys = {KEY_ALIASES["serve"].get(k, k) for k in SERVE.keys}
    assert own <= keys, f"no config key for: {own - keys}"
