"""`onnxtax.quantize.run` with real torch, ONNX Runtime and ORT's quantizers, on tiny models built here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from onnxtax.core.errors import InputSpecError
from onnxtax.quantize.segments import Budget, metrics_of, parse_budgets
from tests.models import tiny

QUICK = {"bench_batch_sizes": [1], "bench_min_time": 0.02}


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """tests/models/tiny.py:Tiny exported once (TorchScript exporter: fast), and its data segments."""
    from onnxtax.export import export_model

    root = tmp_path_factory.mktemp("quant")
    result = export_model(tiny.spec("Tiny"), root / "tiny.onnx", ["x:batch,16"], exporter="torchscript")
    assert result, result.error
    out = {"Scorer": (tiny.spec("Tiny"), root / "tiny.onnx")}
    rng = np.random.default_rng(7)
    np.savez(root / "cal.npz", x=rng.standard_normal((256, 16)).astype(np.float32))
    ordinary = rng.standard_normal((600, 16)).astype(np.float32)
    tail = rng.standard_normal((30, 16)).astype(np.float32)
    tail[:, :4] *= 25  # outside the calibration range
    mixed = rng.standard_normal((256, 16)).astype(np.float32)
    mixed[:13, :4] *= 25  # calibration like production: 5% tail rows
    np.savez(root / "cal_mixed.npz", x=mixed)
    model = tiny.Tiny().eval()
    for name, x in (("ordinary", ordinary), ("tail", tail)):
        with torch.inference_mode():  # labels: the FP32 decisions, one in ten flipped (reviewed outcomes)
            label = (model(torch.from_numpy(x)).numpy()[:, 0] > 0.5).astype(np.int64)
        label[::10] = 1 - label[::10]
        np.savez(root / f"{name}.npz", x=x, label=label)
    return root, out


def _evals(root):
    return [f"ordinary={root / 'ordinary.npz'}", f"tail={root / 'tail.npz'}"]


def test_tail_segment_outside_calibration_fails_while_the_aggregate_passes(mlp):
    from onnxtax.quantize import quantize_model

    root, models = mlp
    spec, onnx_path = models["Scorer"]
    out = root / "refused.int8.onnx"
    report = quantize_model(spec, onnx_path, out, evals=_evals(root), budgets=["agreement@0.5=0.9"], mode="static",
                            calibration=[root / "cal.npz"], labels="label", **QUICK)
    assert not report and report.exit_code == 1
    cand = report.candidates[0]
    failing = cand.evaluation.failing
    assert [(c.segment, c.metric) for c in failing] == [("tail", "agreement@0.5")]
    tail = failing[0]
    assert tail.value < 0.9 <= tail.aggregate  # the aggregate gate would have approved it
    line = report.failures[0]
    assert "tail" in line and "agreement@0.5" in line and "aggregate" in line and "would have approved" in line
    assert not out.exists() and not (root / "refused.int8.manifest.json").exists() and not report.written
    # labels give an accuracy drop per segment: FP32 accuracy minus INT8 accuracy, in points
    seg = next(s for s in cand.evaluation.segments if s.segment == "tail")
    acc = seg.metrics
    assert acc["accuracy_drop"]["value"] == pytest.approx(
        100 * (acc["accuracy_fp32"]["value"] - acc["accuracy"]["value"]), abs=1e-9)
    assert acc["accuracy_fp32"]["value"] == pytest.approx(0.9) and acc["accuracy_drop"]["value"] > 5
    # the FP32 ORT model beside it agrees with eager: the loss is quantization's, not the export's
    assert all(s.value("agreement@0.5") == 1.0 for s in report.fp32.segments)


def test_dynamic_quantization_batch_dependence_is_detected(mlp):
    from onnxtax.quantize import quantize_model

    root, models = mlp
    spec, onnx_path = models["Scorer"]
    report = quantize_model(spec, onnx_path, root / "dyn.int8.onnx", evals=_evals(root), budgets=["max_abs=1"],
                            mode="dynamic", batch_size=64, **QUICK)
    segs = report.candidates[0].evaluation.segments
    ordinary = next(s for s in segs if s.segment == "ordinary")
    # activation scales per batch: a row mixed with tail rows gets another answer than alone
    assert ordinary.batch_dependence["rows_changed"] > 0
    assert ordinary.metrics["max_abs"]["row"] != ordinary.metrics["max_abs"]["batch"]
    assert ordinary.metrics["max_abs"]["value"] == max(ordinary.metrics["max_abs"]["row"],
                                                       ordinary.metrics["max_abs"]["batch"])
    assert report.passed and report.written  # loose budget: approved and written


def test_auto_exclude_finds_the_one_culprit_layer(mlp):
    """Calibrated on traffic with 5% tail rows, the first layer's input range is 25x wider than the
    ordinary rows need: quantizing that layer is what breaks the budget, and only it goes back to FP32."""
    from onnxtax.core.manifest import read_manifest
    from onnxtax.verify import verify_artifact
    from onnxtax.quantize import quantize_model

    root, models = mlp
    spec, onnx_path = models["Scorer"]
    out = root / "auto.int8.onnx"
    args = dict(evals=_evals(root), budgets=["mean_abs=0.004"], mode="static", calibration=[root / "cal_mixed.npz"],
                **QUICK)
    plain = quantize_model(spec, onnx_path, out, **args)
    assert not plain and not out.exists()
    assert {c.segment for c in plain.candidates[0].evaluation.failing} == {"ordinary", "tail"}
    report = quantize_model(spec, onnx_path, out, auto_exclude=True, **args)
    assert report and report.written and out.is_file()
    excluded = report.best.excluded
    assert [(e.origin.module, e.origin.op_type, e.reason) for e in excluded] == [("net.0", "Gemm", "auto")]
    assert excluded[0].cost_us is not None and 1 in excluded[0].cost_us
    manifest = read_manifest(out)
    q = manifest["quantization"]
    assert q["mode"] == "static" and q["format"] == "qdq" and q["calibration_method"] == "minmax"
    assert q["calibration_files"][0]["sha256"] and q["source"]["sha256"] == report.source["sha256"]
    assert [e["module"] for e in q["excluded_nodes"]] == ["net.0"]
    assert [b["metric"] for b in q["budgets"]] == ["mean_abs"]
    assert verify_artifact(out)


def test_min_speedup_gates_a_build_that_meets_its_budgets(mlp):
    from onnxtax.quantize import quantize_model

    root, models = mlp
    spec, onnx_path = models["Scorer"]
    out = root / "slow.int8.onnx"
    report = quantize_model(spec, onnx_path, out, evals=_evals(root), budgets=["max_abs=1"], mode="dynamic",
                            min_speedup=1000, **QUICK)
    cand = report.candidates[0]
    assert cand.evaluation.passed and not report and not out.exists()
    assert cand.speed_failures and "below --min-speedup 1000" in report.failures[0]


def test_segment_key_splits_one_file_and_segment_budgets_override(mlp, tmp_path):
    from onnxtax.quantize import quantize_model

    root, models = mlp
    spec, onnx_path = models["Scorer"]
    both = dict(np.load(root / "ordinary.npz"))
    tail = dict(np.load(root / "tail.npz"))
    np.savez(tmp_path / "all.npz", x=np.concatenate([both["x"], tail["x"]]),
             region=np.array(["eu"] * len(both["x"]) + ["tail"] * len(tail["x"])))
    report = quantize_model(spec, onnx_path, tmp_path / "m.int8.onnx", evals=[str(tmp_path / "all.npz")],
                            segment_key="region", budgets=["agreement@0.5=0.9", "tail:agreement@0.5=0.0"],
                            mode="static", calibration=[root / "cal.npz"], **QUICK)
    assert [s.name for s in report.segments] == ["eu", "tail"]
    checks = {(c.segment, c.limit) for s in report.best.evaluation.segments for c in s.checks}
    assert checks == {("eu", 0.9), ("tail", 0.0)}
    assert report.passed


def test_usage_errors_before_any_work(mlp, tmp_path):
    from onnxtax.quantize import quantize_model

    root, models = mlp
    spec, onnx_path = models["Scorer"]
    with pytest.raises(InputSpecError, match="needs calibration"):
        quantize_model(spec, onnx_path, tmp_path / "a.onnx", evals=_evals(root), budgets=["top1=1"], mode="static")
    with pytest.raises(InputSpecError, match="no --budget"):
        quantize_model(spec, onnx_path, tmp_path / "a.onnx", evals=_evals(root), budgets=[])
    with pytest.raises(InputSpecError, match="no array named 'x'"):
        np.savez(tmp_path / "bad.npz", y=np.zeros((2, 16), np.float32))
        quantize_model(spec, onnx_path, tmp_path / "a.onnx", evals=[str(tmp_path / "bad.npz")], budgets=["top1=1"])
    with pytest.raises(InputSpecError, match="matches no node"):
        quantize_model(spec, onnx_path, tmp_path / "a.onnx", evals=_evals(root), budgets=["cosine=0.9"],
                       exclude=["encoder.*"])


def test_budget_parsing_and_metrics():
    assert parse_budgets(["agreement@.5=0.97", "tail:top5=1", "max_abs=0.1", "max_abs=0.2"]) == [
        Budget("agreement@0.5", 0.97), Budget("top5", 1.0, "tail"), Budget("max_abs", 0.2)]
    for bad in ("agreement@0.5=97", "speed=1", "tail:=1", "cosine=nan", "max_abs=-1"):
        with pytest.raises(InputSpecError):
            parse_budgets([bad])
    ref = np.array([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4], [0.3, 0.3, 0.4]])
    got = np.array([[0.1, 0.6, 0.3], [0.4, 0.1, 0.5], [0.3, 0.3, 0.4]])
    m = metrics_of(ref, got, topk=[2], labels=np.array([1, 0, 0]))
    assert m["top1"] == pytest.approx(2 / 3) and m["top2"] == 1.0
    assert m["max_abs"] == pytest.approx(0.1) and m["cosine"] < 1.0
    assert m["accuracy_fp32"] == pytest.approx(2 / 3) and m["accuracy_drop"] == pytest.approx(100 / 3)
    assert Budget("accuracy_drop", 1.0).holds(0.5) and not Budget("top1", 0.99).holds(0.98)
    assert not Budget("cosine", 0.9).holds(float("nan"))


def test_report_json_is_plain_and_complete(mlp):
    from onnxtax.quantize import quantize_model
    from onnxtax.core.report import jsonable

    root, models = mlp
    spec, onnx_path = models["Scorer"]
    report = quantize_model(spec, onnx_path, root / "j.int8.onnx", evals=_evals(root), budgets=["cosine=0.5"],
                            mode="dynamic", **QUICK)
    data = json.loads(json.dumps(jsonable(report.to_dict())))
    assert data["schema"] == "onnxtax.quantize/1" and data["passed"] is True and data["exit_code"] == 0
    size = data["size"]  # a 16-feature MLP: the scales and zero points outweigh what INT8 weights save
    assert size["ratio"] == pytest.approx(size["fp32_bytes"] / size["int8_bytes"]) and size["int8_bytes"] > 0
    lat = data["candidates"][0]["latency"][0]
    assert lat["batch_size"] == 1 and lat["fp32"]["p50_ms"] > 0 and lat["int8"]["p50_ms"] > 0


BERT = """
import torch
from torch import nn
from transformers import BertConfig, BertModel


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.bert = BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=64, max_position_embeddings=32)).eval()

    def forward(self, input_ids):
        return self.bert(input_ids=input_ids).last_hidden_state
"""


def test_real_architecture_tiny_bert_keeps_a_named_module_in_fp32(write_model, tmp_path):
    """A transformers BERT (random tiny config): dynamic quantization of its embeddings, judged by the
    lowest row cosine; `--exclude` by PyTorch module path reaches the nodes of that encoder layer."""
    from onnxtax.export import export_model
    from onnxtax.quantize import quantize_model

    spec = f"{write_model(BERT, 'tiny_bert')}:Encoder"
    assert export_model(spec, tmp_path / "bert.onnx", ["input_ids:[batch,seq]:int64"], exporter="torchscript")
    np.savez(tmp_path / "queries.npz", input_ids=np.random.default_rng(0).integers(0, 100, (12, 8)))
    report = quantize_model(spec, tmp_path / "bert.onnx", tmp_path / "bert.int8.onnx",
                            evals=[f"queries={tmp_path / 'queries.npz'}"], budgets=["cosine=0.99"], mode="dynamic",
                            exclude=["bert.encoder.layer.1.*"], batch_size=4, **QUICK)
    assert report and report.written
    excluded = report.best.excluded
    assert excluded and all(e.origin.module.startswith("bert.encoder.layer.1.") for e in excluded)
    assert {"MatMul"} <= {e.origin.op_type for e in excluded} and all(e.reason == "--exclude" for e in excluded)
    seg = report.best.evaluation.segments[0]
    assert seg.metrics["cosine"]["value"] >= 0.99 and seg.batch_dependence["rows_changed"] > 0


def test_pre_processing_takes_relative_paths_and_leaves_the_current_folder_alone(tmp_path, monkeypatch):
    """ORT's shape inference writes scratch files into the current folder; pre-processing runs
    in a scratch folder of its own, and the paths it was given still point at the model."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from onnxtax.quantize.graph import preprocess

    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 2], np.ones(8, dtype=np.float32))
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (tmp_path / "m").mkdir()
    onnx.save(model, tmp_path / "m" / "fp32.onnx")
    monkeypatch.chdir(tmp_path)
    assert preprocess(Path("m/fp32.onnx"), Path("m/pre.onnx")) is None
    assert (tmp_path / "m" / "pre.onnx").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


KEYWORD_ONLY = '''
import torch


class Scaled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(16, 8)

    def forward(self, x, *, scale):
        return self.fc(x) * scale
'''


def test_keyword_only_inputs_reach_quantize_and_its_embedding_wording(tmp_path):
    """A forward(self, x, *, scale) exports and passes parity; quantize must call it the same way
    (it used to pass `scale` positionally: "takes 2 positional arguments but 3 were given"). Its
    output is an embedding judged by cosine: no "decisions change" is reported for it."""
    from onnxtax.export import export_model
    from onnxtax.quantize import quantize_model
    from onnxtax.render.quantize import quantize_table
    from rich.console import Console

    (tmp_path / "kw.py").write_text(KEYWORD_ONLY)
    spec = f"{tmp_path / 'kw.py'}:Scaled"
    assert export_model(spec, tmp_path / "kw.onnx", ["x:batch,16", "scale:batch,1"], exporter="torchscript")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ev.npz", x=rng.standard_normal((64, 16)).astype(np.float32),
             scale=rng.uniform(0.5, 2, (64, 1)).astype(np.float32))
    report = quantize_model(spec, tmp_path / "kw.onnx", tmp_path / "kw.int8.onnx", evals=[str(tmp_path / "ev.npz")],
                            budgets=["cosine=0.5"], mode="dynamic", **QUICK)
    assert report and not report.problems, report.failures + report.problems
    deps = [s.batch_dependence for s in report.best.evaluation.segments if s.batch_dependence]
    assert deps and all(d["decisions_changed"] is None for d in deps)
    console = Console(record=True, width=200)
    quantize_table(report, console)
    text = console.export_text()
    assert "decision(s) change" not in text
    assert re.search(r"size: [\d.]+ (B|KiB) FP32 -> [\d.]+ (B|KiB) INT8", text), text  # its largest unit
