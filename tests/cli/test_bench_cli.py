"""`onnxtax bench` on the command line: exit codes, --json schema, gates, --record,
--plot, --profile, usage errors. In-process (CliRunner) except where the process
boundary is the point."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from onnxtax.cli import app
from tests.models import tiny

FAST = ["--min-time", "0.05", "--warmup", "3", "--no-cold-start"]


STATS = {"type": "object", "required": ["iterations", "total_s", "p50_ms", "p90_ms", "p99_ms", "min_ms", "max_ms",
                                        "mean_ms"], "additionalProperties": False,
         "properties": {"iterations": {"type": "integer", "minimum": 1},
                        **{k: {"type": "number", "exclusiveMinimum": 0}
                           for k in ("total_s", "p50_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "mean_ms")}}}
REPORT_SCHEMA = {
    "type": "object",
    "required": ["schema_version", "passed", "model", "inputs", "input_source", "settings", "paths",
                 "skipped_providers", "batches", "harness_overhead_ms", "cold_start", "sweep", "profile", "gates",
                 "failures", "host", "duration_s", "memory"],
    "additionalProperties": False,
    "properties": {
        "schema_version": {"const": 2},
        "passed": {"type": "boolean"},
        "model": {"type": "object", "required": ["spec", "class_name", "onnx"]},
        "inputs": {"type": "array", "items": {"type": "object", "required": ["name", "dims", "dtype"]}},
        "input_source": {"enum": ["arguments", "manifest", "onnx-graph"]},
        "settings": {"type": "object", "required": ["batch_axis", "batch_sizes", "dims", "threads", "torch_threads",
                                                    "opt_level", "warmup", "min_time_s", "rounds", "timer",
                                                    "gc_disabled", "interleaved", "seed"]},
        "paths": {"type": "array", "items": {"type": "object", "required": [
            "id", "kind", "call", "provider", "options", "threads", "opt_level", "device", "placement", "status",
            "reason"]}},
        "batches": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["batch_size", "shapes", "latency", "call_path", "throughput_per_s", "speedup",
                         "harness_share"],
            "properties": {"latency": {"type": "object", "additionalProperties": STATS},
                           "throughput_per_s": {"type": "object", "additionalProperties": {"type": "number"}},
                           "speedup": {"type": "object", "additionalProperties": {"type": "number"}}}}},
        "skipped_providers": {"type": "array", "items": {"type": "string"}},
        "harness_overhead_ms": {"type": "object", "required": ["p50", "p99"]},
        "sweep": {"type": ["object", "null"], "required": ["batch_sizes", "opt_levels", "threads", "configured", "results", "best"]},
        "profile": {"type": ["array", "null"], "items": {"type": "object", "required": [
            "path", "batch_size", "file", "runs", "run_mean_us", "node_mean_us", "top_ops"]}},
        "cold_start": {"type": "object", "required": ["measured", "reason", "runs", "paths"]},
        "gates": {"type": "array", "items": {"type": "object", "required": [
            "gate", "key", "path", "batch_size", "limit", "value", "passed", "message"]}},
        "failures": {"type": "array", "items": {"type": "string"}},
        "host": {"type": "object", "required": ["cpu", "cpu_count", "versions"]},
        "duration_s": {"type": "number"},
        "memory": {"type": "object", "required": ["weights_bytes", "peak_rss_bytes", "peak_source", "preflight"]},
    },
}


@pytest.fixture(scope="module")
def m(tmp_path_factory):
    """A tiny model exported with its manifest (for --record), and a copy without one. The
    export runs in its own process: the TorchScript exporter changes torch state for later tests."""
    import shutil

    from tests.conftest import run_cli

    root = tmp_path_factory.mktemp("bench_cli")
    spec = tiny.spec("Tiny")
    proc = run_cli("export", spec, "-o", root / "tiny.onnx", "--input", "x:batch,16", "--exporter", "torchscript")
    assert proc.returncode == 0, proc.stderr
    bare = root / "bare.onnx"
    shutil.copy(root / "tiny.onnx", bare)
    return SimpleNamespace(root=root, spec=spec, onnx=root / "tiny.onnx", bare=bare)


def invoke(*args):
    return CliRunner().invoke(app, ["bench", *map(str, args)], catch_exceptions=False,
                              env={"COLUMNS": "200"})


def test_json_on_stdout_follows_the_schema(m, cli):
    import jsonschema

    proc = cli("bench", m.spec, m.onnx, "--batch-sizes", "1,2", *FAST, "--max-latency-ms", "P99=100000",
               "--json", "-")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # nothing but JSON on stdout; progress went to stderr
    jsonschema.validate(data, REPORT_SCHEMA)
    assert data["passed"] is True and data["input_source"] == "manifest"
    assert [b["batch_size"] for b in data["batches"]] == [1, 2]
    assert [p["id"] for p in data["paths"]] == ["eager", "ort:cpu"]
    assert {g["batch_size"] for g in data["gates"]} == {1, 2} and all(g["passed"] for g in data["gates"])
    for batch in data["batches"]:
        for stats in batch["latency"].values():
            assert stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"]


def test_latency_gate_that_cannot_be_met_exits_1_with_the_numbers(m):
    result = invoke(m.spec, m.onnx, "--batch-sizes", "1", *FAST, "--max-latency-ms", "P99=0.000001")
    assert result.exit_code == 1
    assert "gate failed (max_latency_ms): ort:cpu batch 1: p99" in result.stderr
    assert "> limit 1e-06 ms" in result.stderr
    assert "FAIL max_latency_ms" in result.stdout


def test_speedup_gate_that_cannot_be_met_exits_1(m):
    result = invoke(m.spec, m.onnx, "--batch-sizes", "1,2", *FAST, "--min-speedup", "1000000")
    assert result.exit_code == 1
    assert result.stderr.count("gate failed (min_speedup)") == 2
    assert "< required 1e+06x" in result.stderr


def test_table_json_file_and_plot(m, tmp_path):
    result = invoke(m.spec, m.onnx, "--input", "x:batch,16", "--batch-sizes", "1,4", *FAST,
                    "--json", tmp_path / "r.json", "--plot", tmp_path / "lat.png")
    assert result.exit_code == 0, result.stderr
    for text in ("latency per call", "eager/ORT", "iobinding", "inference_mode", "harness overhead",
                 "cold start: not measured: not requested"):
        assert text in result.stdout
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["input_source"] == "arguments" and len(data["batches"]) == 2
    assert (tmp_path / "lat.png").read_bytes()[:4] == b"\x89PNG"


def test_record_stores_the_summary_in_the_manifest(m):
    from onnxtax.core.manifest import read_manifest
    from onnxtax.verify import verify_artifact

    before = read_manifest(m.onnx)
    result = invoke(m.spec, m.onnx, "--batch-sizes", "1", *FAST, "--record", "--min-speedup", "0.0001")
    assert result.exit_code == 0, result.stderr
    after = read_manifest(m.onnx)
    record = after.pop("benchmark")
    before.pop("benchmark", None)
    assert after == before  # nothing else touched
    assert verify_artifact(m.onnx).passed
    assert record["passed"] is True and record["settings"]["threads"] == 1
    assert record["batches"][0]["batch_size"] == 1 and record["batches"][0]["ort:cpu"]["p50_ms"] > 0
    assert record["call_path"]["ort:cpu"] == "iobinding" and record["gates"][0]["gate"] == "min_speedup"


def test_record_without_a_manifest_fails_before_measuring(m):
    result = invoke(m.spec, m.bare, "--record", *FAST)
    assert result.exit_code == 2
    assert "error: no manifest at" in result.stderr and "latency" not in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--input", "x:batch,1 6"], "neither a size nor an axis name"),
    (["--input", "x:batch,16:int64"], "but the ONNX graph takes float32"),
    (["--input", "x:batch,16", "--input", "y:batch,16"], "forward() takes 1"),
    (["--batch-sizes", "0"], "not a positive integer"),
    (["--max-latency-ms", "p42=1"], "PERCENTILE[@BATCH]=MS"),
    (["--max-latency-ms", "p99@3=1", "--batch-sizes", "1"], "batch size 3, which is not benchmarked"),
    (["--provider", "nope"], "unknown execution provider"),
    (["--provider", "cuda"], "not available on this host"),
    (["--dim", "seq=4"], "names no dynamic axis"),
    (["--opt-level", "max"], "unknown --opt-level"),
    (["--warmup", "0"], "at least 1 warm-up"),
    (["--range", "z=0:3"], "names no input"),
])
def test_bad_input_exits_2_without_a_traceback(m, args, message):
    result = invoke(m.spec, m.onnx, *FAST, *args)
    assert result.exit_code == 2, result.stdout
    assert message in result.stderr and "Traceback" not in result.stderr
    assert "fix:" in result.stderr


def test_bad_model_or_file_exits_2(m, tmp_path):
    missing = invoke(m.spec, tmp_path / "none.onnx", *FAST)
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    bad_spec = invoke(f"{tmp_path / 'none.py'}:Net", m.onnx, *FAST)
    assert bad_spec.exit_code == 2 and "does not exist" in bad_spec.stderr


def test_plot_without_matplotlib_exits_2_before_measuring(m, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = invoke(m.spec, m.onnx, *FAST, "--plot", tmp_path / "x.png")
    assert result.exit_code == 2
    assert "--plot needs matplotlib" in result.stderr and "onnxtax[plot]" in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_cold_start_sweep_and_profile_are_rendered(m, tmp_path):
    result = invoke(m.spec, m.onnx, "--batch-sizes", "1", "--min-time", "0.02", "--warmup", "2",
                    "--cold-start-runs", "1", "--sweep", "--profile", tmp_path / "prof")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "cold start: fresh process to first result" in out and "peak RSS" in out
    assert "session options sweep" in out and "best for ort:cpu: opt level" in out
    assert "top operators: ort:cpu, batch 1" in out and "Gemm" in out
    assert list((tmp_path / "prof").glob("ort-cpu-b1*.json"))


@pytest.mark.openvino
def test_openvino_and_cpu_side_by_side(m, cli, ov_python):
    proc = cli("bench", m.spec, m.onnx, "--batch-sizes", "1", *FAST, "--provider", "openvino:device_type=CPU",
               "--provider", "cpu", "--json", "-", python=ov_python)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    paths = {p["id"]: p for p in data["paths"]}
    assert list(paths) == ["eager", "ort:openvino:device_type=CPU", "ort:cpu"]
    ov = paths["ort:openvino:device_type=CPU"]
    # OpenVINO keeps its own thread pool: bench sets it to the thread count it reports (1)
    assert ov["provider"] == "OpenVINOExecutionProvider" and ov["threads"] == 1
    assert ov["options"] == {"device_type": "CPU", "num_of_threads": "1"}
    assert ov["placement"]["on_provider"] > 0
    assert set(data["batches"][0]["speedup"]) == {"ort:openvino:device_type=CPU", "ort:cpu"}
