"""Op-level localisation and claims that hold: tiny BERT, GPT-2 and CLIP text models (random init,
built from code) whose fully masked rows make eager SDPA return zeros while the dynamo graph returns
the mean of the value rows; a planted case where a child module's input is reshaped by the graph
(the pattern behind GPT-2's old false "its inputs agree"); and a checker that recomputes every
comparison a report states, which must fail on a doctored report."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest

from onnxtax.core import InputSpec, ProviderRequest
from onnxtax.parity import check_parity, localize
from onnxtax.parity.attribution import bring_inside, targets_inside
from onnxtax.parity.rows import failing_units, shared_by_failing
from tests.cli.test_parity_cli import invoke
from tests.test_parity import export_torchscript

HF = '''
import torch
from torch import nn


class Bert(nn.Module):
    def __init__(self):
        super().__init__()
        from transformers import BertConfig, BertModel
        torch.manual_seed(0)
        config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                            vocab_size=99, max_position_embeddings=64)
        self.model = BertModel(config).eval()

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class GPT2(nn.Module):
    def __init__(self):
        super().__init__()
        from transformers import GPT2Config, GPT2Model
        torch.manual_seed(0)
        config = GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=99, n_positions=64)
        self.model = GPT2Model(config).eval()

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class CLIP(nn.Module):
    def __init__(self):
        super().__init__()
        from transformers import CLIPTextConfig, CLIPTextModel
        torch.manual_seed(0)
        config = CLIPTextConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                                vocab_size=99, max_position_embeddings=64)
        self.model = CLIPTextModel(config).eval()

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
'''

PLANTED = '''
import torch
from torch import nn


class Flat(nn.Module):
    """A projection that flattens its input first, as transformers' Conv1D does."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 8) / 3)
        self.bias = nn.Parameter(torch.zeros(8))

    def forward(self, x):
        out = torch.addmm(self.bias, x.reshape(-1, 8), self.weight)
        return out.view(*x.shape[:-1], 8)


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = Flat()

    def forward(self, x):
        b, s, _ = x.shape
        h = x.view(b, s, 2, 4).transpose(1, 2)
        h = h * 0.5
        h = h.transpose(1, 2).reshape(b, s, 8)
        return self.proj(h)


class Planted(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(8, 8)
        self.head = Head()

    def forward(self, x):
        return self.head(self.inp(x))
'''

ATTENTION = {"Bert": "model.encoder.layer.0.attention.self", "GPT2": "model.h.0.attn",
             "CLIP": "model.encoder.layers.0.self_attn"}
SDPA_CALL = "attn_output = torch.nn.functional.scaled_dot_product_attention("
TOKENS = ["input_ids:batch,seq:int64", "attention_mask:batch,seq:int64"]


def _line(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(Path(path).read_text().splitlines(), 1) if text in line)


def _dynamo(model, path: Path, args: tuple, names: list[str]) -> Path:
    import torch

    dims = tuple({0: torch.export.Dim.DYNAMIC, 1: torch.export.Dim.DYNAMIC} for _ in args)
    torch.onnx.export(model, args, str(path), dynamo=True, input_names=names, dynamic_shapes=dims, verbose=False)
    return path


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """The three models exported once for all xdist workers (a lock in the run's shared temp folder):
    GPT-2 through onnxtax (its manifest records torch.export's `seq >= 2`), BERT and CLIP straight
    through torch.onnx.export(dynamo=True)."""
    import os

    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()  # under xdist, each worker's: their parent is this run's
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "hf_ops"
    root.mkdir(exist_ok=True)
    with FileLock(str(root / "export.lock")):
        if not (root / "done").exists():
            _export_hf(root)
            (root / "done").write_text("")
    out = {"file": root / "hf_tiny.py", "masked": root / "masked.npz", "lead": root / "lead.npz"}
    return out | {name: root / f"{name}.onnx" for name in ATTENTION}


def _export_hf(root: Path) -> None:
    import torch

    from onnxtax.core import load_model
    from onnxtax.export import export_model

    src = root / "hf_tiny.py"
    src.write_text(HF)
    result = export_model(f"{src}:GPT2", root / "GPT2.onnx", TOKENS)
    assert result, result.error
    example = (torch.randint(0, 32, (3, 4)), torch.ones(3, 4, dtype=torch.long))
    for name in ("Bert", "CLIP"):
        _dynamo(load_model(f"{src}:{name}").module.eval(), root / f"{name}.onnx", example,
                ["input_ids", "attention_mask"])
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 32, (4, 5)).astype(np.int64)
    masked = np.ones((4, 5), np.int64)
    masked[[1, 3]] = 0  # rows 1 and 3: every token masked
    np.savez(root / "masked.npz", input_ids=ids, attention_mask=masked)
    lead = np.ones((4, 5), np.int64)
    lead[1, :2] = lead[3, :1] = lead[2, 3:] = 0  # rows 1, 3: first token(s) masked; row 2: padding at the end
    np.savez(root / "lead.npz", input_ids=ids, attention_mask=lead)


# --------------------------------------------------------------------------- an independent check of every claim
def _within(onnx: np.ndarray, eager: np.ndarray, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    """Parity's element test, written again here: |a-b| <= atol*rms(b) + rtol*|b| (exact for integers)."""
    a, b = onnx.astype(np.float64), eager.astype(np.float64)
    if eager.dtype.kind not in "fc":
        return bool(np.array_equal(a, b))
    scale = float(np.sqrt(np.mean(b ** 2))) if b.size else 0.0
    return bool(np.all(np.abs(a - b) <= atol * scale + rtol * np.abs(b)))


def _onnx_values(path: Path, feeds: dict, names: list[str]) -> dict[str, np.ndarray]:
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in dict.fromkeys(names))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def _eager_call(model, args: tuple, path: str, function: str | None, source: tuple[str, int] | None):
    """The inputs of the module at `path`, and the first call of `function` made at `source` (file, line):
    its tensor arguments by label and its output."""
    import sys

    import torch
    from torch.overrides import TorchFunctionMode, resolve_name

    inputs, call = [], {}

    class Spy(TorchFunctionMode):
        def __torch_function__(self, func, types, a=(), kw=None):
            kw = kw or {}
            out = func(*a, **kw)
            frame = sys._getframe(1)
            if not call and function and resolve_name(func) == function and source and (
                    frame.f_code.co_filename, frame.f_lineno) == source:
                named = {f"args[{i}]": v for i, v in enumerate(a)} | dict(kw)
                call.update({k: v.detach().numpy().copy() for k, v in named.items() if isinstance(v, torch.Tensor)})
                call["output"] = out.detach().numpy().copy()
            return out

    def keep(_m, a, kw):
        if not inputs:  # positional inputs by position, keyword ones by name, as the report labels them
            inputs.append({f"input {i}": t.detach().numpy().copy() for i, t in enumerate(a)
                           if isinstance(t, torch.Tensor)} | {k: t.detach().numpy().copy() for k, t in kw.items()
                                                              if isinstance(t, torch.Tensor)})

    hook = model.get_submodule(path).register_forward_pre_hook(keep, with_kwargs=True)
    try:
        with torch.inference_mode(), Spy():
            model(*args)
    finally:
        hook.remove()
    return (inputs[0] if inputs else {}), call


def check_claims(model, onnx_path: Path, arrays: dict, loc) -> None:
    """Recompute, without onnxtax's code, every comparison the report states: the first divergent module's
    inputs ("agree"/"differ"), the op's inputs and output. A report saying one thing where the values show
    another fails here."""
    import torch

    args = tuple(torch.from_numpy(arrays[k]) for k in ("input_ids", "attention_mask") if k in arrays) or (
        torch.from_numpy(arrays["x"]),)
    op = loc.op
    source = (op.source.file, op.source.line) if op is not None and op.source else None
    module_inputs, call = _eager_call(model, args, loc.first.module, op.function if op else None, source)
    names = [c.onnx for c in loc.inputs if c.onnx]
    if op is not None and op.point is not None:
        names += [c.onnx for c in op.inputs if c.onnx] + [op.output]
    got = _onnx_values(onnx_path, arrays, names)
    for c in loc.inputs:
        if c.agree is None:
            continue
        eager = module_inputs[c.eager]
        assert _within(got[c.onnx].reshape(eager.shape), eager) == c.agree, (
            f"the report says {loc.first.module}'s {c.eager} {'agrees' if c.agree else 'differs'} with {c.onnx}")
    if "agree with eager's within tolerance (each compared)" in (loc.origin_detail or ""):
        assert loc.inputs and all(c.agree for c in loc.inputs), "claims its inputs agree, not all compared and equal"
    if op is not None and op.point is not None:
        assert call, f"no eager call of {op.function} at {source}"
        for c in op.inputs:
            if c.agree is not None:
                assert _within(got[c.onnx], call[c.eager]) == c.agree, (
                    f"the report says the op's {c.eager} {'agrees' if c.agree else 'differs'} with {c.onnx}")
        assert _within(got[op.output], call["output"]) != op.point.diverges, "the op's output claim is false"
        if op.status == "made-here":
            assert all(c.agree for c in op.inputs), "'departs while its inputs agree' with an input not agreeing"


# --------------------------------------------------------------------------- the three transformers
@pytest.mark.parametrize("name", ["Bert", "GPT2", "CLIP"])
def test_fully_masked_rows_are_localised_to_layer_0s_attention_call(hf, name):
    from onnxtax.core import load_model

    report = check_parity(f"{hf['file']}:{name}", hf[name], data_files=[hf["masked"]], samples=0, localize=True)
    assert not report
    loc = report.providers[0].localization
    assert loc.status == "localized" and loc.module == ATTENTION[name]
    op = loc.op
    # the op: eager's F.scaled_dot_product_attention, the dynamo FX node aten.scaled_dot_product_attention
    assert op.status == "made-here" and op.op == "aten.scaled_dot_product_attention.default"
    assert op.function == "torch.nn.functional.scaled_dot_product_attention" and op.fx_node.startswith(
        "scaled_dot_product_attention") and "Softmax" in op.lowered_to
    assert (loc.node, loc.node_basis) == (op.node, "op")
    # the line is the call, not the reshape after it, and the user's line that led there is named
    assert loc.source.code == SDPA_CALL and loc.source.file.endswith("sdpa_attention.py")
    assert loc.source.line == _line(loc.source.file, SDPA_CALL)
    assert loc.source.user_frame.startswith(f"{hf['file']}:") and loc.source.origin == "library"
    # its four inputs were compared, each with the value the ONNX op reads, and agree
    assert sorted(c.eager for c in op.inputs) == ["args[0]", "args[1]", "args[2]", "attn_mask"]
    assert all(c.agree for c in op.inputs) and all(c.onnx for c in op.inputs)
    # the cause, each part checked: the rows that depart are the fully masked ones; eager 0, ONNX the mean
    assert "departs exactly at the 20 query row(s) whose attention mask is all False" in op.cause
    assert "the ONNX graph the mean of the value rows" in op.cause and "not -inf" in op.cause
    # the rows, and what their inputs share
    assert loc.rows["diverging"] == [1, 3] and loc.rows["size"] == 4
    assert loc.shared[0]["input"] == "attention_mask" and loc.shared[0]["rule"] == "all 0"
    assert "attention_mask is all 0 in every failing row (rows 1, 3)" in loc.summary
    assert "scaled_dot_product_attention" in report.failures[0] and "rows 1, 3" in report.failures[0]
    arrays = dict(np.load(hf["masked"]))
    check_claims(load_model(f"{hf['file']}:{name}").module.eval(), hf[name], arrays, loc)


def test_gpt2_no_longer_claims_c_projs_inputs_agree(hf):
    from onnxtax.core import load_model

    report = check_parity(f"{hf['file']}:GPT2", hf["GPT2"], data_files=[hf["masked"]], samples=0, localize=True)
    loc = report.providers[0].localization
    # c_proj is the first module whose output departs; its input (the attention's output, reshaped by the
    # graph into c_proj's own Reshape) is compared in C order and differs: zeros in eager, not in ONNX
    assert loc.first.module == "model.h.0.attn.c_proj" and loc.origin == "inherited"
    (c,) = loc.inputs
    assert c.agree is False and c.max_abs_diff > 0.01 and c.how.startswith("same elements in C order")
    assert "agree with eager's within tolerance" not in loc.origin_detail
    import torch

    model = load_model(f"{hf['file']}:GPT2").module.eval()
    arrays = dict(np.load(hf["masked"]))
    args = (torch.from_numpy(arrays["input_ids"]), torch.from_numpy(arrays["attention_mask"]))
    inputs, _ = _eager_call(model, args, "model.h.0.attn.c_proj", None, None)
    assert not inputs["input 0"][[1, 3]].any()  # eager: all zeros in the masked rows
    onnx_in = _onnx_values(hf["GPT2"], arrays, [c.onnx])[c.onnx].reshape(inputs["input 0"].shape)
    assert np.linalg.norm(onnx_in[[1, 3]]) > 0.1  # the graph: not zeros


def test_first_token_masked_is_named_for_causal_models(hf):
    report = check_parity(f"{hf['file']}:GPT2", hf["GPT2"], data_files=[hf["lead"]], samples=0, localize=True)
    loc = report.providers[0].localization
    assert loc.op.status == "made-here" and loc.module == ATTENTION["GPT2"]
    assert loc.rows["diverging"] == [1, 3]  # row 2's padding at the end leaves every query a key to see
    assert [(r["row"], r["positions"]) for r in loc.rows["at"]] == [(1, [0, 1]), (3, [0])]
    rows, positions = loc.shared
    assert rows["rule"] == "first 0" and "(first token masked)" in rows["text"]
    assert positions["rule"] == "prefix 0" and "every earlier position" in positions["text"]
    assert loc.positions == {"axis": 1, "size": 5, "diverging": [0, 1], "first": 0}


def test_at_seq_1_the_masked_rows_are_not_blamed_on_the_assumed_range(hf):
    """torch.export assumed seq >= 2. At seq=1 the masked rows fail, and the same samples repeated to
    seq=2 fail too: the range is named and cleared, never blamed."""
    report = check_parity(f"{hf['file']}:GPT2", hf["GPT2"], dims={"batch": [2], "seq": [1]},
                          ranges={"attention_mask": (0, 2)}, localize=True)
    (case,) = [c for c in report.cases if not c.passed]
    assert case.shape == "batch=2,seq=1" and report.shapes[0].assumption == "seq >= 2"
    assert not case.reason.startswith("outside the range")
    assert ("lies outside the range torch.export assumed at export (seq >= 2), yet the same sample repeated along "
            "seq to seq=2, inside it, fails too") in case.reason and "so the range is not the cause" in case.reason
    assert "fails only outside the range" not in (report.providers[0].reason or "")
    loc = report.providers[0].localization
    assert loc.op.status == "made-here" and loc.shared and loc.shared[0]["rule"] == "all 0"


def test_json_and_table_show_the_op_the_rows_and_what_they_share(hf, tmp_path):
    proc = invoke(f"{hf['file']}:CLIP", hf["CLIP"], "--data", hf["masked"], "--samples", "0", "--localize",
                  "--json", tmp_path / "r.json", "--junit", tmp_path / "j.xml")
    assert proc.exit_code == 1, proc.output
    loc = json.loads((tmp_path / "r.json").read_text())["providers"][0]["localization"]
    assert loc["op"]["op"] == "aten.scaled_dot_product_attention.default" and loc["op"]["status"] == "made-here"
    assert set(loc["op"]) == {"status", "module", "op", "kind", "function", "fx_node", "node", "op_type",
                              "lowered_to", "output", "source", "frames", "point", "inputs", "weights", "cause",
                              "own_ops", "graph_ops", "paired", "compared", "notes"}
    assert loc["rows"]["diverging"] == [1, 3] and loc["shared"][0]["rule"] == "all 0"
    assert loc["inputs"][0]["agree"] is False  # out_proj's input: compared, differs
    out = re.sub(r"\s+", " ", proc.stdout)
    for row in (" op aten.scaled_dot_product_attention.default", " op check made-here", " cause it departs exactly",
                " shared attention_mask is all 0", " rows 2 of 4: 1, 3"):
        assert row in out, row
    assert "shared: attention_mask is all 0" in (tmp_path / "j.xml").read_text()


# --------------------------------------------------------------------------- a planted case, both exporters
def _plant(path: Path, factor: float = 0.6) -> None:
    """Scale the constant of head's `h * 0.5` in the graph: the op, not a module, makes the difference."""
    import onnx
    from onnx import numpy_helper

    from onnxtax.parity.intermediates import GraphMap

    model = onnx.load(str(path))
    scopes = {n.name: n.scope for n in GraphMap(path).nodes}
    mul = next(n for n in model.graph.node if n.op_type == "Mul" and scopes.get(n.name) == "head")
    for t in model.graph.initializer:
        if t.name in mul.input:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 0 + np.float32(factor), t.name))
    for c in model.graph.node:
        if c.op_type == "Constant" and c.output[0] in mul.input:
            c.attribute[0].t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(c.attribute[0].t) * 0 + factor))
    onnx.save(model, str(path))


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_a_planted_op_is_named_and_no_claim_is_false(exporter, tmp_path, write_model):
    import torch

    from onnxtax.core import load_model

    src = write_model(PLANTED, "planted")
    model = load_model(f"{src}:Planted").module.eval()
    path = tmp_path / "planted.onnx"
    example = (torch.randn(3, 5, 8),)
    if exporter == "dynamo":
        _dynamo(model, path, example, ["x"])
    else:
        export_torchscript(model, path, example, ["x"], ["y"], {"x": {0: "b", 1: "s"}})
    _plant(path)
    arrays = {"x": np.random.default_rng(0).standard_normal((2, 4, 8)).astype(np.float32)}
    loc = localize(model, path, arrays, specs=[InputSpec("x", ("b", "s", 8), "float32")], mapping={"x": "x"},
                   request=ProviderRequest("CPUExecutionProvider"), rtol=1e-4, atol=1e-5)
    # head.proj departs first; its input differs (the graph computes it with the planted constant)
    assert loc.first.module == "head.proj" and [c.agree for c in loc.inputs] == [False]
    assert loc.origin == "inherited" and loc.module == "head"
    if exporter == "dynamo":  # the optimiser folded head's reshape into proj's: compared in C order
        assert loc.inputs[0].how.startswith("same elements in C order")
    # inside head: the mul, at its line, with its one input compared and agreeing
    op = loc.op
    assert op.status == "made-here" and op.kind == "mul" and op.op_type == "Mul"
    assert op.op == ("aten.mul.Tensor" if exporter == "dynamo" else "Mul")
    assert loc.source.file == str(src) and loc.source.line == _line(src, "h = h * 0.5")
    assert [c.agree for c in op.inputs] == [True]
    check_claims(model, path, arrays, loc)


def test_the_claim_checker_fails_a_false_claim(tmp_path, write_model):
    """The checker above is what stops a false claim: a report doctored to claim what the values deny
    (the old GPT-2 sentence: its inputs agree) must fail it."""
    import torch

    from onnxtax.core import load_model

    src = write_model(PLANTED, "planted_doctored")
    model = load_model(f"{src}:Planted").module.eval()
    path = export_torchscript(model, tmp_path / "p.onnx", (torch.randn(3, 5, 8),), ["x"], ["y"],
                              {"x": {0: "b", 1: "s"}})
    _plant(path)
    arrays = {"x": np.random.default_rng(0).standard_normal((2, 4, 8)).astype(np.float32)}
    loc = localize(model, path, arrays, specs=[InputSpec("x", ("b", "s", 8), "float32")], mapping={"x": "x"},
                   request=ProviderRequest("CPUExecutionProvider"), rtol=1e-4, atol=1e-5)
    check_claims(model, path, arrays, loc)  # the real report passes
    lying = copy.deepcopy(loc)
    lying.inputs[0].agree = True
    lying.origin_detail = "its 1 input(s) agree with eager's within tolerance (each compared)"
    with pytest.raises(AssertionError, match="agrees with"):
        check_claims(model, path, arrays, lying)
    lying = copy.deepcopy(loc)
    lying.op.inputs[0].agree = False
    with pytest.raises(AssertionError, match="the op's args"):
        check_claims(model, path, arrays, lying)
    lying = copy.deepcopy(loc)
    lying.op.point.tolerance_ratio = 0.5  # "its output agrees"
    with pytest.raises(AssertionError, match="output claim is false"):
        check_claims(model, path, arrays, lying)


# --------------------------------------------------------------------------- rows and ranges, on plain arrays
def _table(mask_rows: list[bool], arrays: dict, sample: int = 0):
    mask = np.zeros((len(mask_rows), 3, 2), bool)
    mask[np.array(mask_rows)] = True
    return failing_units(mask, arrays, sample)


def test_what_failing_rows_share_is_said_only_when_it_separates():
    specs = [InputSpec("attention_mask", ("batch", "seq"), "int64")]
    masks = np.array([[1, 1, 1], [0, 0, 0], [1, 0, 1], [0, 0, 0]])
    (rule,) = shared_by_failing([_table([False, True, False, True], {"attention_mask": masks})], specs)
    assert rule["rule"] == "all 0"
    assert rule["text"].startswith("attention_mask is all 0 in every failing row (rows 1, 3)")
    # a passing row is all 0 too: "all 0" no longer separates, and is not said
    assert all(r["rule"] != "all 0" for r in shared_by_failing(
        [_table([False, True, False, False], {"attention_mask": masks})], specs))
    # every row fails: nothing to set them against, nothing is said; over two samples, there is
    one = {"attention_mask": np.zeros((1, 3), np.int64)}
    assert shared_by_failing([_table([True], one)], specs) == []
    other = {"attention_mask": np.ones((1, 3), np.int64)}
    pooled = shared_by_failing([_table([True], one, 0), _table([False], other, 1)], specs, where="batch=1,seq=3")
    assert pooled[0]["rule"] == "all 0" and "row 0 of sample 0" in pooled[0]["text"] and "at batch=1,seq=3" in (
        pooled[0]["text"])


def test_assumed_ranges_bring_a_sample_inside_by_cutting_or_repeating():
    specs = [InputSpec("ids", ("batch", "seq"), "int64")]
    assert targets_inside({"batch": 33, "seq": 1}, {"batch": {"min": None, "max": 32}, "seq": {"min": 2, "max": None}}
                          ) == {"batch": 32, "seq": 2}
    ids = np.arange(6).reshape(3, 2)
    assert bring_inside({"ids": ids}, specs, {"batch": 2})["ids"].tolist() == [[0, 1], [2, 3]]
    assert bring_inside({"ids": ids[:, :1]}, specs, {"seq": 2})["ids"].tolist() == [[0, 0], [2, 2], [4, 4]]


def test_whole_samples_failing_together_are_not_read_as_a_row_feature():
    """Every row of one sample fails, no row of the other: any per-row bound could separate them by
    chance, so none is stated; the report says the failure goes by whole samples."""
    specs = [InputSpec("x", ("batch", 8), "float32")]
    rng = np.random.default_rng(0)
    tables = [_table([True] * 4, {"x": rng.standard_normal((4, 8)) - 1}, 0),
              _table([False] * 4, {"x": rng.standard_normal((4, 8)) + 1}, 1)]
    (rule,) = shared_by_failing(tables, specs)
    assert rule["level"] == "samples" and rule["text"].startswith(
        "the failure goes by whole samples: every row of sample 0 fails, no row of sample 1 does")
