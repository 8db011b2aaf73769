"""onnxtax.bench.run: structure, counts and ordering of the measurements, gates, inputs,
cold start, sweep and profile, on tiny models. No assertion depends on how fast
anything ran."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from onnxtax.bench import (EAGER, HARNESS, BenchReport, batch_axis_of, parse_batch_sizes, parse_latency_gates,
                           run_bench, tuning)
from onnxtax.bench.timing import ROUNDS
from onnxtax.bench.tuning import PROFILE_RUNS, parse_profile
from onnxtax.render import bench as render_bench
from onnxtax.core import InputSpecError, LoadError, OnnxtaxError
from onnxtax.core import InputSpec, parse_input_specs
from tests.models import tiny

FAST = dict(min_time=0.05, warmup=3, cold_start=False)



def _graph(path: Path, x_dims: list, nodes: list, initializers: list, y_dims: list) -> Path:
    """An ONNX file with the models' signatures, built directly: bench compares speed, not
    values, and an in-process TorchScript export would change torch state for later tests."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, path.stem, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_dims)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def _tiny_graph(path: Path, batch) -> Path:
    """Tiny: Gemm(16->8) + Relu + Gemm(8->1) + Sigmoid."""
    import numpy as np
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("w1", (16, 8)), ("b1", (8,)), ("w2", (8, 1)), ("b2", (1,)))]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["z"]), helper.make_node("Sigmoid", ["z"], ["y"])]
    return _graph(path, [batch, 16], nodes, weights, [batch, 1])


def _seq_graph(path: Path) -> Path:
    """SeqMean: mean over axis 1, times 2."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=0),
             helper.make_node("Mul", ["m", "two"], ["y"])]
    return _graph(path, ["batch", "seq", 4], nodes, [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])],
                  ["batch", 4])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_models")
    return SimpleNamespace(root=root, module=tiny, spec=tiny.spec("Tiny"), onnx=_tiny_graph(root / "tiny.onnx", "batch"),
                           seq_spec=tiny.spec("SeqMean"), seq_onnx=_seq_graph(root / "seq.onnx"),
                           inputs=parse_input_specs(["x:batch,16"]))


@pytest.fixture(scope="module")
def report(models) -> BenchReport:
    return run_bench(models.spec, models.onnx, models.inputs, batch_sizes=(1, 4), **FAST)


def test_every_path_is_measured_at_every_batch_size(report):
    assert [b.batch_size for b in report.batches] == [1, 4]
    assert [p.id for p in report.paths] == [EAGER, "ort:cpu"]
    assert report.paths[1].call == "iobinding" and report.paths[1].provider == "CPUExecutionProvider"
    for b in report.batches:
        assert set(b.latency) == {HARNESS, EAGER, "ort:cpu"}
        assert b.shapes == {"x": [b.batch_size, 16]}
        assert b.call_path == {"ort:cpu": "iobinding"}
        for stats in b.latency.values():
            assert stats.iterations >= ROUNDS
            assert 0 < stats.min_ms <= stats.p50_ms <= stats.p90_ms <= stats.p99_ms <= stats.max_ms
            assert stats.min_ms <= stats.mean_ms <= stats.max_ms
            assert stats.total_s > 0


def test_throughput_speedup_and_harness_are_derived_from_the_latencies(report):
    for b in report.batches:
        ort, eager = b.latency["ort:cpu"], b.latency[EAGER]
        assert b.throughput("ort:cpu") == pytest.approx(b.batch_size / (ort.mean_ms / 1e3))
        assert b.speedup("ort:cpu") == pytest.approx(eager.p50_ms / ort.p50_ms)
        assert 0 < b.harness_share("ort:cpu")
    overhead = report.harness_overhead_ms()
    assert 0 < overhead["p50"] <= overhead["p99"]


def test_report_without_gates_passes_and_says_why_cold_start_is_missing(report):
    assert report and report.passed and report.gates == []
    data = report.to_dict()
    assert data["cold_start"] == {"measured": False, "reason": "not requested (--no-cold-start)",
                                  "runs": 0, "paths": {}}
    assert data["sweep"] is None and data["profile"] is None


def test_json_keys_are_the_documented_ones(report):
    data = json.loads(json.dumps(report.to_dict()))
    assert list(data) == ["schema_version", "passed", "model", "inputs", "input_source", "settings", "paths",
                          "skipped_providers", "batches", "harness_overhead_ms", "cold_start", "sweep", "profile",
                          "gates", "failures", "host", "duration_s", "memory"]
    assert data["schema_version"] == 2 and data["failures"] == []
    assert data["input_source"] == "arguments"
    assert data["inputs"] == [{"name": "x", "dims": ["batch", 16], "dtype": "float32"}]
    assert data["settings"]["batch_axis"] == "batch" and data["settings"]["batch_sizes"] == [1, 4]
    assert data["settings"]["threads"] == 1 and data["settings"]["timer"] == "time.perf_counter_ns"
    batch = data["batches"][0]
    assert set(batch) == {"batch_size", "shapes", "latency", "call_path", "throughput_per_s", "speedup",
                          "harness_share"}
    assert set(batch["latency"]["ort:cpu"]) == {"iterations", "total_s", "p50_ms", "p90_ms", "p99_ms", "min_ms",
                                                "max_ms", "mean_ms"}
    assert set(batch["throughput_per_s"]) == {EAGER, "ort:cpu"}
    assert set(batch["speedup"]) == {"ort:cpu"}
    assert data["paths"][1]["placement"]["on_provider"] == data["paths"][1]["placement"]["total_nodes"] > 0


def test_summary_for_the_manifest_is_compact(report):
    summary = report.summary()
    assert summary["batches"][0]["batch_size"] == 1
    assert set(summary["batches"][0]) == {"batch_size", EAGER, "ort:cpu", "speedup"}
    assert summary["call_path"] == {EAGER: "inference_mode", "ort:cpu": "iobinding"}
    assert summary["passed"] is True and summary["best_session_options"] is None
    assert len(json.dumps(summary)) < 4000


def test_threads_apply_to_both_runtimes_and_torch_is_restored(models):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rep = run_bench(models.spec, models.onnx, models.inputs, batch_sizes=(1,), threads=1,
                        max_latency_ms={"p99": 100000}, **FAST)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert {p.id: p.threads for p in rep.paths} == {EAGER: 1, "ort:cpu": 1}
    assert rep.passed and [g.passed for g in rep.gates] == [True]


def test_gates_fail_with_the_numbers(models):
    rep = run_bench(models.spec, models.onnx, models.inputs, batch_sizes=(1, 4),
                    max_latency_ms={"p99": 100000, "p50@1": 1e-9}, min_speedup=1e6, **FAST)
    assert not rep and not rep.passed
    by_key = {(g.gate, g.key, g.batch_size): g for g in rep.gates}
    assert by_key[("max_latency_ms", "p99", 1)].passed and by_key[("max_latency_ms", "p99", 4)].passed
    only_one = by_key[("max_latency_ms", "p50@1", 1)]
    assert not only_one.passed and ("max_latency_ms", "p50@1", 4) not in by_key
    assert only_one.value == rep.batches[0].latency["ort:cpu"].p50_ms
    assert "p50" in only_one.message and "limit 1e-09 ms" in only_one.message
    speed = [g for g in rep.gates if g.gate == "min_speedup"]
    assert len(speed) == 2 and not any(g.passed for g in speed)
    assert "required 1e+06x" in speed[0].message
    assert {g.key for g in rep.failed_gates} == {"p50@1", "eager/ort p50"}
    assert rep.to_dict()["passed"] is False


@pytest.mark.parametrize("kwargs, match", [
    ({"max_latency_ms": {"p50@3": 1.0}}, "batch size 3"),
    ({"max_latency_ms": {"p42": 1.0}}, "PERCENTILE"),
    ({"max_latency_ms": {"p99": -1}}, "MS > 0"),
    ({"min_speedup": 0}, "must be a finite number > 0"),
    ({"opt_level": "max"}, "unknown --opt-level"),
    ({"warmup": 0}, "warm-up"),
    ({"min_time": 0}, "--min-time"),
    ({"providers": ["cuda"]}, "not available"),
    ({"dims": {"seq": [4]}}, "names no dynamic axis"),
])
def test_bad_arguments_are_usage_errors(models, kwargs, match):
    args = dict(FAST, batch_sizes=(1, 4))
    args.update(kwargs)
    with pytest.raises(OnnxtaxError, match=match) as exc:
        run_bench(models.spec, models.onnx, models.inputs, **args)
    assert exc.value.exit_code == 2


def test_speedup_gate_needs_the_pytorch_model(models):
    with pytest.raises(InputSpecError, match="needs the PyTorch model"):
        run_bench(None, models.onnx, models.inputs, min_speedup=2, **FAST)


def test_missing_or_unreadable_onnx_is_a_load_error(models, tmp_path):
    with pytest.raises(LoadError, match="does not exist"):
        run_bench(models.spec, tmp_path / "nope.onnx", models.inputs, **FAST)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(LoadError, match="is a text file, not an ONNX model"):
        run_bench(models.spec, junk, None, **FAST)


@pytest.mark.parametrize("texts, match", [
    (["z:batch,16", "y:batch,16"], "do not match the ONNX graph's inputs"),
    (["x:batch,16:int64"], "the ONNX graph takes float32"),
    (["x:batch,15"], "is 15 at axis 1, the ONNX input 'x' is fixed at 16"),
    (["x:batch,16,1"], "has 3 dims"),
])
def test_inputs_must_fit_the_graph(models, texts, match):
    with pytest.raises(InputSpecError, match=match):
        run_bench(None, models.onnx, parse_input_specs(texts), batch_sizes=(1,), **FAST)


def test_inputs_come_from_the_graph_when_nothing_else_says(models):
    rep = run_bench(None, models.onnx, None, batch_sizes=(2,), **FAST)
    assert rep.input_source == "onnx-graph"
    assert rep.inputs == [InputSpec("x", ("batch", 16), "float32")]
    assert [p.id for p in rep.paths] == ["ort:cpu"] and set(rep.batches[0].latency) == {HARNESS, "ort:cpu"}
    assert rep.batches[0].speedup("ort:cpu") is None and rep.to_dict()["batches"][0]["speedup"] == {}


def test_inputs_and_export_sizes_come_from_the_manifest(models, tmp_path):
    from onnxtax.core.manifest import manifest_path_for

    out = tmp_path / "seq.onnx"
    shutil.copy(models.seq_onnx, out)
    manifest = {"format_version": 1, "artifact": {"file": "seq.onnx"},
                "inputs": [{"name": "x", "dims": ["batch", "seq", 4], "dtype": "float32"}],
                "dynamic_axes": {"batch": {"export_size": 3}, "seq": {"export_size": 6}}}
    manifest_path_for(out).write_text(json.dumps(manifest))
    rep = run_bench(models.seq_spec, out, None, batch_sizes=(1, 2), **FAST)
    assert rep.input_source == "manifest"
    assert rep.settings["dims"] == {"seq": 6}
    assert [b.shapes["x"] for b in rep.batches] == [[1, 6, 4], [2, 6, 4]]


def test_other_dynamic_axes_need_a_size(models):
    specs = parse_input_specs(["x:[batch,seq,4]"])
    with pytest.raises(InputSpecError, match="no size for dynamic axis 'seq'"):
        run_bench(models.seq_spec, models.seq_onnx, specs, **FAST)
    with pytest.raises(InputSpecError, match="only the batch axis"):
        run_bench(models.seq_spec, models.seq_onnx, specs, dims={"seq": [3, 5]}, **FAST)
    with pytest.raises(InputSpecError, match="both --batch-sizes and --dim"):
        run_bench(models.seq_spec, models.seq_onnx, specs, batch_sizes=(1,), dims={"batch": [2], "seq": 3}, **FAST)
    rep = run_bench(models.seq_spec, models.seq_onnx, specs, dims={"batch": [3, 1], "seq": 5}, **FAST)
    assert [b.shapes["x"] for b in rep.batches] == [[3, 5, 4], [1, 5, 4]]


def test_batch_axis_is_named_batch_or_the_first_dynamic_axis():
    assert batch_axis_of(parse_input_specs(["ids:[n,seq]:int64", "mask:[batch,seq]:int64"])) == "batch"
    assert batch_axis_of(parse_input_specs(["img:3,224,224", "ids:[seq,n]:int64"])) == "seq"
    assert batch_axis_of(parse_input_specs(["img:1,3,8,8"])) is None


def test_static_model_has_one_batch_size(models, tmp_path):
    path = _tiny_graph(tmp_path / "static.onnx", 2)
    rep = run_bench(None, path, None, **FAST)
    assert [b.batch_size for b in rep.batches] == [2] and rep.settings["batch_axis"] is None
    with pytest.raises(InputSpecError, match="no dynamic axis"):
        run_bench(None, path, None, batch_sizes=(1, 8), **FAST)


def test_cold_start_runs_fresh_processes_for_both_paths(models, tmp_path, monkeypatch):
    # a `module:NAME` spec importable here only through sys.path: the child must see the same path
    shutil.copy(tiny.FILE, tmp_path / "bench_probe_models.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    alive: list[tuple[str, list[str]]] = []
    rep = run_bench("bench_probe_models:Tiny", models.onnx, models.inputs, batch_sizes=(1, 2), min_time=0.02,
                    warmup=2, cold_start=True, cold_start_runs=1, profile_dir=tmp_path / "prof",
                    progress=lambda what, done, total: alive.append((what, _live_copies())))
    assert set(rep.cold_start) == {EAGER, "ort:cpu"}
    # the paths are timed before: the fresh processes and each profiling session load the model
    # while this process holds no eager model and no other session (each would be a copy of the weights)
    later = [(what, live) for what, live in alive if what.startswith(("cold start", "profile"))]
    assert len(later) == 4 and all(live == [] for _, live in later), later
    for cold in rep.cold_start.values():
        assert cold.measured, cold.reason
        assert cold.runs == 1
        assert cold.peak_rss_mb.median > 0 and cold.rss_source in ("VmHWM", "ru_maxrss")
        phases = cold.interpreter_s.median + cold.import_s.median + cold.load_s.median + cold.predict_s.median
        assert 0 < phases <= cold.first_result_s.median
    data = rep.to_dict()["cold_start"]
    assert data["measured"] and data["runs"] == 1
    assert set(data["paths"][EAGER]["first_result_s"]) == {"min", "median", "max", "values"}


def _live_copies() -> list[str]:
    """ORT sessions and modules built from the probe spec that this process still holds."""
    import gc
    import warnings

    import onnxruntime as ort

    gc.collect()
    with warnings.catch_warnings():  # isinstance() on torch's deprecated module attributes warns
        warnings.simplefilter("ignore")
        return [type(o).__name__ for o in gc.get_objects()
                if isinstance(o, ort.InferenceSession) or type(o).__module__ == "bench_probe_models"]


def test_in_memory_module_cannot_be_cold_started(models):
    rep = run_bench(models.module.Tiny(), models.onnx, models.inputs, batch_sizes=(1,), min_time=0.02, warmup=2,
                    cold_start=True, cold_start_runs=1)
    eager = rep.cold_start[EAGER]
    assert not eager.measured and "SPEC string" in eager.reason
    assert rep.cold_start["ort:cpu"].measured
    assert rep.spec is None and rep.class_name == "Tiny"


def test_outputs_whose_shape_changes_are_left_to_ort(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("RandomUniformLike", ["x"], ["r"], seed=1.0),
             helper.make_node("Greater", ["r", "half"], ["m"]),
             helper.make_node("NonZero", ["m"], ["y"])]
    graph = helper.make_graph(nodes, "varying", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, [2, None])],
                              [helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "varying.onnx"
    onnx.save(model, path)
    rep = run_bench(None, path, None, batch_sizes=(4,), **FAST)
    assert rep.batches[0].call_path == {"ort:cpu": "iobinding-ort-outputs"}
    assert rep.paths[0].call == "iobinding-ort-outputs"


def test_sweep_tries_every_level_and_thread_count(models):
    from onnxtax.core.providers import OPT_LEVELS

    rep = run_bench(None, models.onnx, models.inputs, batch_sizes=(1, 2), sweep=True, min_time=0.01, warmup=2,
                    cold_start=False)
    sweep = rep.sweep
    threads = tuning._sweep_threads(1)
    assert sweep.threads == threads and sweep.opt_levels == list(OPT_LEVELS)
    assert len(sweep.results) == len(OPT_LEVELS) * len(threads) * 2
    assert {(e.opt_level, e.threads, e.batch_size) for e in sweep.results} == {
        (level, n, bs) for level in OPT_LEVELS for n in threads for bs in (1, 2)}
    best = sweep.best()["ort:cpu"]
    assert best["opt_level"] in OPT_LEVELS and best["threads"] in threads and best["geomean_vs_best"] >= 1.0
    for bs in ("1", "2"):
        fastest = min(e.latency.p50_ms for e in sweep.results if str(e.batch_size) == bs)
        assert best["by_batch"][bs]["p50_ms"] == fastest
    assert rep.to_dict()["sweep"]["best"]["ort:cpu"]["opt_level"] == best["opt_level"]
    # the setting measured in the main table is in the grid: the best one is at least as fast
    assert sweep.configured == ("all", 1) and best["speedup_vs_configured"] >= 1.0


def test_profile_writes_ort_json_and_ranks_operators(models, tmp_path):
    rep = run_bench(None, models.onnx, models.inputs, batch_sizes=(2,), profile_dir=tmp_path / "prof", **FAST)
    (prof,) = rep.profile
    assert Path(prof.file).is_file() and Path(prof.file).parent == tmp_path / "prof"
    assert prof.path == "ort:cpu" and prof.batch_size == 2 and prof.runs == PROFILE_RUNS
    assert 0 < prof.node_mean_us <= prof.run_mean_us
    assert prof.top_ops and all(o.provider == "CPUExecutionProvider" for o in prof.top_ops)
    assert any("Gemm" in o.op_type for o in prof.top_ops)
    assert sum(o.percent for o in prof.top_ops) == pytest.approx(100.0)
    assert [o.total_us for o in prof.top_ops] == sorted((o.total_us for o in prof.top_ops), reverse=True)
    assert rep.to_dict()["profile"][0]["top_ops"][0]["op_type"] == prof.top_ops[0].op_type


def test_parse_profile_counts_only_the_last_runs(tmp_path):
    def run(ts, dur):
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}

    def node(ts, dur, op):
        return {"cat": "Node", "name": f"n_{op}_kernel_time", "ts": ts, "dur": dur,
                "args": {"op_name": op, "provider": "CPUExecutionProvider"}}

    events = [run(0, 100), node(1, 90, "Gemm"),  # warm-up: ignored
              run(200, 10), node(201, 6, "Gemm"), node(208, 2, "Relu"),
              run(300, 10), node(301, 6, "Gemm"), node(308, 2, "Relu")]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(events))
    runs, run_mean, node_mean, ops = parse_profile(path, last_runs=2)
    assert (runs, run_mean, node_mean) == (2, 10.0, 8.0)
    assert [(o.op_type, o.calls, o.total_us, o.percent) for o in ops] == [("Gemm", 2, 12.0, 75.0),
                                                                          ("Relu", 2, 4.0, 25.0)]


def test_parsers():
    assert parse_batch_sizes("1, 8,64,8") == [1, 8, 64]
    assert parse_latency_gates(["P99=5", "p50@1=0.05", "max=10"]) == {"p99": 5.0, "p50@1": 0.05, "max": 10.0}
    for bad in ("p99", "p99=0", "p99=x", "mean=1", "p99@x=1", "p99=inf"):
        with pytest.raises(InputSpecError):
            parse_latency_gates([bad])
    for bad in ("0", "1,x", ""):
        with pytest.raises(InputSpecError):
            parse_batch_sizes(bad)


def test_plot_is_a_png(report, tmp_path):
    out = render_bench.write_plot(report, tmp_path / "sub" / "lat.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["lat.png"]


def test_plot_without_matplotlib_is_a_usage_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(OnnxtaxError, match="needs matplotlib") as exc:
        render_bench.require_plot()
    assert exc.value.exit_code == 2


def test_a_batch_size_the_graph_cannot_run_is_a_failed_path_in_the_result(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "baked",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 16])],
                              [helper.make_tensor("shape", TensorProto.INT64, [2], [3, 16])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "baked.onnx"
    onnx.save(model, path)
    assert run_bench(None, path, None, batch_sizes=(3,), **FAST).batches[0].batch_size == 3
    report = run_bench(None, path, None, batch_sizes=(3, 1), **FAST)
    assert not report and report.exit_code == 1
    [path_info] = report.paths
    assert path_info.status == "failed" and "ort:cpu failed at batch size 1" in path_info.reason
    assert [b.batch_size for b in report.batches] == [3]  # measured where it ran, reported where it did not
    assert report.to_dict()["failures"] == [path_info.reason]
