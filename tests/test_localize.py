"""Localisation of a parity failure: real exports, real ORT sessions, one thing broken on purpose."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from onnxtax.parity import localize
from tests.cli.test_parity_cli import invoke
from onnxtax.parity import check_parity
from onnxtax.core import ProviderRequest
from onnxtax.core import InputSpec
from tests.test_parity import export_torchscript

MODELS = '''
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.act = nn.GELU()

    def forward(self, x):
        return self.act(self.linear(x)) + x


class Stack(nn.Module):
    """Residual blocks and a head."""
    def __init__(self, depth=5, width=16):
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList([Block(width) for _ in range(depth)])
        self.head = nn.Linear(width, 2)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


class Deep(Stack):
    def __init__(self):
        super().__init__(depth=24, width=32)


class Gate(nn.Module):
    def __init__(self):
        super().__init__()
        self.pos = nn.Linear(8, 8)
        self.neg = nn.Linear(8, 8)

    def forward(self, x):
        if x.mean() > 0:
            return self.pos(x)
        return self.neg(x)


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Identity()
        self.gate = Gate()
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        return self.out(self.gate(self.inp(x)))


class MeanBranch(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.l = nn.Linear(8, 4)

    def forward(self, x):
        y = self.l(x)
        if x.mean() > 0:
            return y
        return y * 2 + 1


class Clamped(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 2)

    def forward(self, x):
        if x.abs().max() > 5:
            x = x.clamp(-5, 5)
        return self.lin(x)


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(20, 8)
        self.proj = nn.Linear(8, 3)

    def forward(self, ids):
        return self.proj(self.emb(ids))
'''


def _line(path: Path, text: str, after: str = "") -> int:
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if after in line)
    return next(i for i, line in enumerate(lines[start:], start + 1) if text in line)


def _scale_initializer(path: Path, name: str, factor: float = 1.01, row: int | None = None) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    for t in model.graph.initializer:
        if t.name == name:
            arr = numpy_helper.to_array(t).copy()
            if row is None:
                arr *= factor
            else:
                arr[row] *= factor
            t.CopyFrom(numpy_helper.from_array(arr, name))
            break
    else:
        raise AssertionError(f"no initializer {name}")
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import torch

    from onnxtax.core import load_model

    root = tmp_path_factory.mktemp("localize")
    src = root / "loc_models.py"
    src.write_text(MODELS)
    batch = {"x": {0: "batch"}}
    out = {"file": src}
    for name, example in (("Stack", torch.randn(3, 16)), ("Gated", torch.ones(3, 8)),
                          ("MeanBranch", torch.ones(3, 8))):
        out[name] = export_torchscript(load_model(f"{src}:{name}").module, root / f"{name}.onnx", (example,),
                                       ["x"], ["y"], batch)
    _scale_initializer(out["Stack"], "layers.2.linear.weight")  # the middle one of five blocks, +1%
    return out


def test_a_middle_layers_weight_changed_by_1pct_is_localised_to_that_layer(models, tmp_path):
    spec = f"{models['file']}:Stack"
    proc = invoke(spec, models["Stack"], "--localize", "--json", tmp_path / "r.json",
                  "--junit", tmp_path / "j.xml", "--sarif", tmp_path / "r.sarif")
    assert proc.exit_code == 1, proc.output
    loc = json.loads((tmp_path / "r.json").read_text())["providers"][0]["localization"]
    assert loc["status"] == "localized"
    assert (loc["module"], loc["class_name"]) == ("layers.2.linear", "Linear")  # not layers.0, not layers.4
    assert (loc["node"], loc["op_type"], loc["node_basis"]) == ("/layers.2/linear/Gemm", "Gemm", "weight")
    assert loc["weights"][0]["initializer"] == "layers.2.linear.weight"
    assert abs(loc["weights"][0]["max_rel_diff"] - 0.01) < 1e-4
    assert loc["origin"] == "local"
    # TorchScript records no stack; the op-level search pairs the Gemm with eager's F.linear call and gives
    # the statement in Block.forward that made it
    assert loc["source"]["file"] == str(models["file"]) and loc["source"]["function"] == "Block.forward"
    assert loc["source"]["line"] == _line(models["file"], "return self.act(self.linear(x)) + x")
    assert loc["op"]["status"] == "made-here" and loc["op"]["node"] == "/layers.2/linear/Gemm"
    assert [c["agree"] for c in loc["op"]["inputs"]] == [True] and loc["op"]["weights"] == 2
    trail = [p["module"] for p in loc["trail"]]
    assert trail[:3] == ["layers.2.linear", "layers.2.act", "layers.2"] and "layers.3" in trail
    assert trail[-1] == "output y" and loc["trail"][-1]["tolerance_ratio"] > 1
    assert loc["exporter"] == "torchscript" and loc["case"]["shape"] == "batch=1"
    assert "first divergence on cpu" in proc.stdout and "layers.2.linear (Linear)" in proc.stdout
    failure = ET.parse(tmp_path / "j.xml").getroot().find(".//failure")
    assert "localized: first divergence in layers.2.linear" in failure.get("message")
    assert "grows: layers.2.linear" in failure.text
    sarif = json.loads((tmp_path / "r.sarif").read_text())
    jsonschema.validate(sarif, json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text()))
    (result,) = sarif["runs"][0]["results"]
    where = result["locations"][0]["physicalLocation"]
    assert result["ruleId"] == "parity-divergence" and result["level"] == "error"
    assert where["artifactLocation"]["uri"].endswith("loc_models.py")
    assert where["region"]["startLine"] == _line(models["file"], "return self.act(self.linear(x)) + x")
    assert result["locations"][0]["logicalLocations"][0]["name"] == "/layers.2/linear/Gemm"


def test_dynamo_export_points_at_the_users_line(tmp_path, write_model):
    import torch

    from onnxtax.core import load_model

    src = write_model(MODELS, "dyn_models")
    model = load_model(f"{src}:Stack").module.eval()
    path = tmp_path / "stack.onnx"
    torch.onnx.export(model, (torch.randn(3, 16),), str(path), dynamo=True, input_names=["x"],
                      dynamic_shapes=({0: torch.export.Dim.DYNAMIC},), verbose=False)
    _scale_initializer(path, "layers.3.linear.weight")
    arrays = {"x": np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)}
    loc = localize(model, path, arrays, specs=[InputSpec("x", ("batch", 16), "float32")], mapping={"x": "x"},
                   request=ProviderRequest("CPUExecutionProvider"), rtol=1e-4, atol=1e-5)
    assert loc and loc.module == "layers.3.linear" and loc.exporter == "dynamo"
    assert loc.source.file == str(src) and loc.source.line == _line(src, "return self.act(self.linear(x)) + x")
    assert loc.source.origin == "user" and "self.linear(x)" in loc.source.code


def test_a_frozen_branch_is_localised_to_the_forward_that_holds_it(models):
    proc = invoke(f"{models['file']}:Gated", models["Gated"], "--localize", "--dim", "batch=4", "--json", "-")
    assert proc.exit_code == 1, proc.output
    loc = json.loads(proc.stdout)["providers"][0]["localization"]
    assert (loc["module"], loc["class_name"], loc["origin"]) == ("gate", "Gate", "local")
    assert loc["graph_only_modules"] == ["gate.pos"] and loc["eager_only_modules"] == ["gate.neg"]
    assert loc["source"]["line"] == _line(models["file"], "if x.mean() > 0:") and loc["source"]["function"] == (
        "Gate.forward")
    assert "a branch frozen at export" in loc["summary"]

    # the branch in the root forward, no module on either side: the root forward and its `if` line
    spec = f"{models['file']}:MeanBranch"
    report = check_parity(spec, models["MeanBranch"], localize=True)
    loc = next(pr.localization for pr in report.providers)
    assert loc.status == "in-root" and loc.class_name == "MeanBranch" and loc.source.function == "MeanBranch.forward"
    assert _line(models["file"], "if x.mean() > 0:", after="class MeanBranch") in loc.branch_lines
    assert "all 1 submodule outputs agree" in loc.origin_detail


def test_an_inherited_difference_points_at_the_parents_own_ops(tmp_path, write_model):
    import torch

    from onnxtax.core import load_model

    src = write_model(MODELS, "clamp_models")
    model = load_model(f"{src}:Clamped").module.eval()
    path = export_torchscript(model, tmp_path / "clamped.onnx", (torch.ones(2, 4),), ["x"], ["y"], {"x": {0: "batch"}})
    arrays = {"x": (np.random.default_rng(0).standard_normal((3, 4)) * 10).astype(np.float32)}
    loc = localize(model, path, arrays, specs=[InputSpec("x", ("batch", 4), "float32")], mapping={"x": "x"},
                   request=ProviderRequest("CPUExecutionProvider"), rtol=1e-4, atol=1e-5)
    assert loc.first.module == "lin" and loc.origin == "inherited"  # lin is right on eager's inputs
    assert (loc.module, loc.class_name) == ("", "Clamped")
    assert loc.source.line == _line(src, "if x.abs().max() > 5:") and loc.source.function == "Clamped.forward"
    assert "in its own ops before lin (Linear)" in loc.summary
    assert any("reads the graph input x directly" in n for n in loc.notes)


def test_rows_that_diverge_and_what_they_share(tmp_path, write_model):
    import torch

    from onnxtax.core import load_model

    src = write_model(MODELS, "tagger_models")
    model = load_model(f"{src}:Tagger").module.eval()
    path = export_torchscript(model, tmp_path / "tagger.onnx", (torch.zeros(2, 5, dtype=torch.int64),), ["ids"],
                              ["tags"], {"ids": {0: "batch", 1: "seq"}})
    _scale_initializer(path, "emb.weight", 1.05, row=7)  # only token 7's embedding is off
    ids = np.array([[1, 2, 3, 4, 5], [1, 7, 2, 2, 2], [3, 3, 3, 3, 3], [9, 9, 9, 9, 7]], np.int64)
    loc = localize(model, path, {"ids": ids}, specs=[InputSpec("ids", ("batch", "seq"), "int64")],
                   mapping={"ids": "ids"}, request=ProviderRequest("CPUExecutionProvider"), rtol=1e-4, atol=1e-5)
    assert loc.module == "emb" and loc.origin == "local"
    assert loc.rows["diverging"] == [1, 3] and loc.rows["common"].startswith(
        "ids contains 7 in every failing row (rows 1, 3) and in none of the 2 passing rows")
    assert loc.positions["diverging"] == [1, 4]
    assert [(r["row"], r["positions"]) for r in loc.rows["at"]] == [(1, [1]), (3, [4])]
    # along the positions, token 7 is exactly where it fails
    assert loc.shared[1]["rule"] == "equal 7" and loc.shared[1]["level"] == "positions"
    assert "only batch rows 1, 3 of 4" in loc.summary


def test_tiny_bert_with_one_middle_layer_corrupted(tmp_path):
    import torch
    from torch import nn
    from transformers import BertConfig, BertModel

    from onnxtax.parity.intermediates import GraphMap

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)

    class Encoder(nn.Module):  # the TorchScript exporter needs plain tensors out
        def __init__(self):
            super().__init__()
            self.bert = BertModel(config).eval()

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    model = Encoder().eval()
    path = export_torchscript(model, tmp_path / "bert.onnx", (torch.randint(0, 100, (2, 8)),
                                                              torch.ones(2, 8, dtype=torch.long)),
                              ["input_ids", "attention_mask"], ["hidden"],
                              {"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}})
    target = "bert.encoder.layer.2.output.dense"
    matmul = next(n for n in GraphMap(path).nodes if n.scope == target and n.op_type == "MatMul")
    weight = next(i for i in matmul.inputs if not i.startswith("/"))
    _scale_initializer(path, weight)
    rng = np.random.default_rng(0)
    arrays = {"input_ids": rng.integers(0, 100, (3, 6)), "attention_mask": np.ones((3, 6), np.int64)}
    specs = [InputSpec("input_ids", ("b", "s"), "int64"), InputSpec("attention_mask", ("b", "s"), "int64")]
    loc = localize(model, path, arrays, specs=specs, mapping={s.name: s.name for s in specs},
                   request=ProviderRequest("CPUExecutionProvider"), rtol=1e-4, atol=1e-5)
    assert loc.module == target and loc.node == matmul.name and loc.node_basis == "weight"
    assert loc.weights[0]["parameter"] == f"{target}.weight"  # stored transposed under a generated name
    assert loc.source.origin == "library" and loc.source.file.endswith("modeling_bert.py")
    assert [p.module for p in loc.trail][:2] == [target, "bert.encoder.layer.2.output.LayerNorm"]


def test_memory_stays_within_the_budget_on_a_deep_model(tmp_path, write_model):
    import onnx
    import torch

    from onnxtax.core import load_model

    src = write_model(MODELS, "deep_models")
    model = load_model(f"{src}:Deep").module.eval()
    path = export_torchscript(model, tmp_path / "deep.onnx", (torch.randn(3, 32),), ["x"], ["y"],
                              {"x": {0: "batch"}})
    _scale_initializer(path, "layers.13.linear.weight")
    # weights in a side file, as large models have them: the graph copies never load them
    onnx.save(onnx.load(str(path)), str(path), save_as_external_data=True, location="deep.onnx.data",
              size_threshold=0)
    assert onnx.load(str(path), load_external_data=False).graph.initializer[0].external_data
    arrays = {"x": np.random.default_rng(1).standard_normal((64, 32)).astype(np.float32)}
    budget = 0.2  # MB; each module output is 8 KB here, held twice (eager and ONNX), 73 modules
    loc = localize(model, path, arrays, specs=[InputSpec("x", ("batch", 32), "float32")], mapping={"x": "x"},
                   request=ProviderRequest("CPUExecutionProvider"), rtol=1e-4, atol=1e-5, memory_budget_mb=budget)
    assert loc.module == "layers.13.linear" and loc.origin == "local"
    assert loc.compared_modules == 24 * 3 + 1 and loc.chunks >= 4
    assert 0 < loc.peak_chunk_mb <= budget


def test_report_keys_are_stable(models):
    report = check_parity(f"{models['file']}:Stack", models["Stack"], localize=True, samples=1)
    data = report.to_dict()
    assert data["settings"]["localize"] is True
    loc = data["providers"][0]["localization"]
    assert set(loc) == {
        "status", "summary", "provider", "provider_name", "provider_specific", "case", "module", "class_name",
        "node", "op_type", "node_basis", "source", "origin", "origin_detail", "inputs", "op", "first", "trail",
        "rows", "positions", "shared", "weights", "graph_only_modules", "eager_only_modules", "branch_lines", "compared_modules",
        "chunks", "peak_chunk_mb", "memory_budget_mb", "session_weights", "exporter", "duration_s", "notes"}
    assert loc["provider_specific"] is None  # one provider: nothing to compare with
    assert set(loc["source"]) == {"file", "line", "function", "code", "origin", "user_frame"}
    # without --localize nothing is localised and the key is null
    plain = check_parity(f"{models['file']}:Stack", models["Stack"], samples=1).to_dict()
    assert plain["providers"][0]["localization"] is None


def test_hints_state_only_what_the_evidence_shows():
    from onnxtax.core import compare_arrays

    rng = np.random.default_rng(0)
    source = rng.standard_normal((4, 8)).astype(np.float32) + 3
    onnx = source + np.float32(2e-6)  # float32 noise against a zero tolerance
    reason = compare_arrays(onnx, source, rtol=0.0, atol=0.0, min_cosine=None).failure_reason()
    assert "float32 rounding level" in reason and "frozen" not in reason and "fixed at export" not in reason
