"""Weights in memory once: the graph read without its weights, models written with their weights
streamed, parity's CPU session on the eager model's own parameters (and its peak RSS)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper

from onnxtax.core.files import sha256_file
from onnxtax.parity import check_parity
from onnxtax.core.skeleton import read_skeleton
from onnxtax.export.save import write_model
from tests.models.stack import write_matmul_stack, write_source, write_stack

ROOT = Path(__file__).resolve().parents[1]

def _stack(tmp_path: Path, width: int, layers: int, *, transposed: tuple[int, ...] = ()) -> tuple[str, Path, list]:
    source, path, linears = write_stack(tmp_path, width, layers, transposed=transposed)
    return f"{source}:build", path, linears


def test_skeleton_reads_the_graph_without_the_weights_and_writing_streams_them_back(tmp_path):
    _, path, linears = _stack(tmp_path, 64, 2)
    full = onnx.load(str(path))
    skeleton = read_skeleton(path)
    assert [n.op_type for n in skeleton.model.graph.node] == [n.op_type for n in full.graph.node]
    weight = next(t for t in skeleton.model.graph.initializer if t.name == "layers.0.weight")
    assert weight.data_location == TensorProto.EXTERNAL and not weight.raw_data  # 16 KB: not read
    assert skeleton.tensors["layers.0.weight"].inline and skeleton.tensors["layers.0.weight"].length == 64 * 64 * 4
    bias = next(t for t in skeleton.model.graph.initializer if t.name == "layers.0.bias")
    assert bias.raw_data  # 256 bytes: kept in the proto
    for external in (False, True):
        out = tmp_path / ("ext" if external else "inline") / "m.onnx"
        out.parent.mkdir()
        digests, _ = write_model(skeleton.model, path.parent, out, external=external)
        assert {p: sha256_file(p) for p in digests} == digests
        assert out.with_name("m.onnx.data").exists() == external
        again = onnx.load(str(out))
        for t in full.graph.initializer:
            got = next(g for g in again.graph.initializer if g.name == t.name)
            np.testing.assert_array_equal(numpy_helper.to_array(got), numpy_helper.to_array(t))
        onnx.checker.check_model(str(out), full_check=True)


def test_a_weight_stored_transposed_is_shared_through_a_view_and_parity_still_passes(tmp_path):
    # square weights: the same name, dtype and shape as the parameter, other bytes; read with
    # transB=0 by the Gemm of its own module: W^T, shared through a transposed view of the parameter
    spec, path, _ = _stack(tmp_path, 64, 2, transposed=(1,))
    report = check_parity(spec, path, ["x:batch,64"], share_weights="always", samples=1)
    assert report.passed, report.failures
    assert report.weights is not None
    assert report.weights["shared_tensors"] == 2  # biases (256 bytes) stay in the proto
    assert report.weights["transposed"] == {"layers.1.weight": "layers.1.weight"}
    assert report.weights["not_shared_bytes"] == 0
    assert any("through transposed views" in n for n in report.notes)
    never = check_parity(spec, path, ["x:batch,64"], share_weights="never", samples=1)
    assert never.passed and never.weights is None
    # a changed weight matches neither as it is nor transposed: loaded from the file, and parity fails
    wrong = check_parity(spec.replace(":build", ":build_wrong"), path, ["x:batch,64"], share_weights="always",
                         samples=1)
    assert not wrong.passed
    assert wrong.weights["transposed_tensors"] == 0
    assert wrong.weights["not_shared"]["layers.1.weight"] == "its bytes differ from layers.1.weight transposed"


def test_a_shape_alone_never_shares_a_transposed_weight(tmp_path):
    """W^T under the parameter's name, but the node reading it says nothing of its module: the graph
    does not confirm what the shape suggests, so it is loaded from the file (its values are W^T)."""
    _, path, _ = _stack(tmp_path, 64, 2, transposed=(1,))
    proto = onnx.load(str(path))
    next(n for n in proto.graph.node if n.name == "/layers.1/Gemm").name = "gemm_1"
    onnx.save(proto, str(path))
    report = check_parity(f"{tmp_path / 'stack_64_2.py'}:build", path, ["x:batch,64"], share_weights="always",
                          samples=1)
    assert report.passed, report.failures
    assert report.weights["shared_tensors"] == 1 and report.weights["transposed_tensors"] == 0
    assert "bytes differ" in report.weights["not_shared"]["layers.1.weight"]


CHILD = r'''
import json, sys
import onnxruntime, torch  # imported before the baseline: the ratio is about the stage, not the imports
from onnxtax.parity import check_parity

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
base = status("VmRSS")
report = check_parity(sys.argv[1], sys.argv[2], [sys.argv[3]], share_weights=sys.argv[4], samples=1)
print(json.dumps({"base": base, "peak": status("VmHWM"), "passed": report.passed, "weights": report.weights,
                  "memory": report.memory.to_dict()}))
'''


def _parity_peak(spec: str, path: Path, input_spec: str, mode: str) -> dict:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, spec, str(path), input_spec, mode],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_parity_peak_memory_stays_under_1_6x_the_weights(tmp_path):
    """What parity adds to a process that has imported torch and ORT, per byte of weights: the
    eager model's weights once plus working memory when shared (measured 1.35-1.39x here at 100 MB
    with the float64 run that measures the model's noise, 1.34x without; fixed costs weigh more
    than on big models); without sharing it measured 2.93x."""
    width, layers = 2896, 3  # 3 x 33.5 MB = 101 MB of weights
    spec, path, _ = _stack(tmp_path, width, layers)
    weights = layers * (width * width + width) * 4
    result = _parity_peak(spec, path, f"x:batch,{width}", "always")  # auto would share from 256 MB only
    assert result["passed"]
    assert result["weights"]["shared_bytes"] == weights  # biases of 11.6 KB too
    ratio = (result["peak"] - result["base"]) / weights
    assert ratio <= 1.6, f"parity added {ratio:.2f}x the weights ({result})"
    # the report says the same: what parity added over the process before the model, per byte of weights
    memory = result["memory"]
    assert memory["before_model_bytes"] >= result["base"] * 0.9
    assert memory["added_over_weights"] == pytest.approx(ratio, abs=0.1), memory


class _Mixed(torch.nn.Module):
    """Weights of two dtypes and sizes, used as they are (a cast would be folded into a new
    constant): float32 and bfloat16 parameters, and a bias small enough to stay in the proto."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(64, 64)
        self.scale = torch.nn.Parameter(torch.randn(64, 64), requires_grad=False)
        self.table = torch.nn.Parameter(torch.randn(64, 64).to(torch.bfloat16), requires_grad=False)

    def forward(self, x):
        return self.lin(x) @ self.scale + (x.to(torch.bfloat16) @ self.table).float()


def test_exported_weights_are_written_from_memory_with_their_checksum(tmp_path):
    import hashlib

    import onnx_ir as ir

    from onnxtax.core.sharing import match_weights
    from onnxtax.export.save import write_exported_weights

    torch.manual_seed(0)
    module = _Mixed().eval()
    program = torch.onnx.export(module, (torch.randn(3, 64),), dynamo=True, verify=False, report=False)
    expected = {v.name: v.const_value.numpy().copy() for v in program.model.graph.initializers.values()
                if v.const_value is not None}
    data = tmp_path / "raw.onnx.data"
    written = write_exported_weights(program.model, data)
    ir.save(program.model, tmp_path / "raw.onnx")
    assert written.size == data.stat().st_size
    assert written.sha.hexdigest() == hashlib.sha256(data.read_bytes()).hexdigest()
    params = dict(module.state_dict(keep_vars=True))
    written_from_params = {n for n in written.origins if n in params and written.unchanged(n, params[n])}
    assert written_from_params == {"lin.weight", "scale", "table"}  # the bias (256 bytes) stays inline
    again = onnx.load(str(tmp_path / "raw.onnx"))
    stored = {t.name: t for t in again.graph.initializer}
    assert stored["lin.bias"].data_location == TensorProto.DEFAULT
    for name, array in expected.items():
        got = numpy_helper.to_array(stored[name], base_dir=str(tmp_path))
        assert got.tobytes() == array.tobytes(), name
    # an in-place change bumps the version counter: the bytes are no longer taken on trust,
    # they are compared, and differ
    skeleton = read_skeleton(tmp_path / "raw.onnx")
    sharing, _ = match_weights(skeleton.tensors, module, written)
    assert {"lin.weight", "scale"} <= set(sharing.shared)
    assert "NumPy" in sharing.not_shared["table"]  # bfloat16: written from memory, not shared with ORT
    with torch.no_grad():
        module.lin.weight.mul_(2)
    assert not written.unchanged("lin.weight", module.lin.weight)
    sharing, _ = match_weights(skeleton.tensors, module, written)
    assert "bytes differ" in sharing.not_shared["lin.weight"] and "scale" in sharing.shared


EXPORT_CHILD = r'''
import json, sys
import torch
from onnxtax.export import export_model

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
# a tiny export first: the exporter's modules and caches (about 300 MB) are then in the baseline,
# and the ratio is about what the weights cost
export_model(torch.nn.Linear(4, 4), sys.argv[2].replace(".onnx", "_warm.onnx"), ["x:batch,4"])
base = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) restarts from here
result = export_model(sys.argv[1], sys.argv[2], [sys.argv[3]])
print(json.dumps({"base": base, "peak": status("VmHWM"), "error": result.error}))
'''


def test_export_holds_the_weights_once(tmp_path):
    """Export's peak over a warmed-up exporter, per byte of weights: the model's own copy plus
    working memory (measured 1.13x here at 100 MB). The checker parsing the written .onnx with
    its weights measured 3.04x; any other full load or bytes copy of the weights adds 1x."""
    width, layers = 2896, 3
    source = write_source(tmp_path, width, layers)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", EXPORT_CHILD, f"{source}:build", str(tmp_path / "m.onnx"),
                          f"x:batch,{width}"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["error"] is None
    weights = layers * (width * width + width) * 4
    ratio = (result["peak"] - result["base"]) / weights
    assert ratio <= 1.4, f"export added {ratio:.2f}x the weights ({result})"


class _Plain(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(64, 64)

    def forward(self, x):
        return self.lin(x)


class _TouchesItsWeight(_Plain):
    """Same weights and outputs, but forward() writes its weight in place (values unchanged)."""

    def forward(self, x):
        with torch.no_grad():
            self.lin.weight.mul_(1.0)
        return self.lin(x)


def test_parity_fails_when_the_eager_model_writes_a_shared_weight(tmp_path):
    from onnxtax.export import export_model

    torch.manual_seed(0)
    plain = _Plain().eval()
    path = tmp_path / "plain.onnx"
    assert export_model(plain, path, ["x:batch,64"]).error is None
    touching = _TouchesItsWeight().eval()
    touching.load_state_dict(plain.state_dict())
    shared = check_parity(touching, path, ["x:batch,64"], share_weights="always", samples=1)
    assert not shared.passed
    assert any("changed 1 shared weight(s) in place" in f and "lin.weight" in f for f in shared.failures)
    assert check_parity(touching, path, ["x:batch,64"], share_weights="never", samples=1).passed
    assert check_parity(plain, path, ["x:batch,64"], share_weights="always", samples=1).passed


# --------------------------------------------------------------------------- weights stored transposed
class _Block(torch.nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.norm = torch.nn.LayerNorm(d)
        self.fc1 = torch.nn.Linear(d, 4 * d)
        self.fc2 = torch.nn.Linear(4 * d, d)

    def forward(self, x):
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(x))))


class _Residual(torch.nn.Module):
    """Pre-norm residual MLP blocks on x:batch,seq,d: the dynamo exporter writes each Linear as
    MatMul over its weight transposed and folded into a new initializer (`val_N`, [in, out])."""

    def __init__(self, d: int = 64, blocks: int = 2):
        super().__init__()
        self.blocks = torch.nn.ModuleList(_Block(d) for _ in range(blocks))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class _WritesThroughItsView(_Residual):
    """Same weights and outputs, but forward() writes a weight in place (values unchanged)."""

    def forward(self, x):
        with torch.no_grad():
            self.blocks[0].fc1.weight.mul_(1.0)
        return super().forward(x)


def _residual() -> _Residual:
    torch.manual_seed(0)
    return _Residual().eval()


FC_WEIGHTS = {f"blocks.{b}.{fc}.weight" for b in (0, 1) for fc in ("fc1", "fc2")}


@pytest.fixture(scope="module")
def residual_onnx(tmp_path_factory) -> Path:
    from onnxtax.export import export_model

    path = tmp_path_factory.mktemp("residual") / "residual.onnx"
    assert export_model(_residual(), path, ["x:batch,seq,64"]).error is None
    return path


def test_dynamo_residual_mlp_shares_its_transposed_weights_and_gives_the_module_back(residual_onnx):
    module = _residual()
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    report = check_parity(module, residual_onnx, ["x:batch,seq,64"], share_weights="always", samples=1)
    assert report.passed, report.failures
    weights = report.weights
    assert set(weights["transposed"].values()) == FC_WEIGHTS  # every fc weight, stored as val_N = W^T
    assert all(name.startswith("val_") for name in weights["transposed"])
    assert weights["transposed_tensors"] == weights["shared_tensors"] == 4  # LayerNorm weights and biases < 4 KB
    assert weights["transposed_bytes"] == weights["shared_bytes"] == 4 * 64 * 256 * 4
    assert weights["not_shared_tensors"] == 0 and weights["not_shared_bytes"] == 0  # nothing read from the file
    # given back as parity found it: contiguous, the same values
    for name, param in module.named_parameters():
        assert param.is_contiguous(), name
        assert torch.equal(param, before[name]), name


def test_a_transposed_weight_is_the_parameters_own_memory(residual_onnx):
    from onnxtax.core.sharing import share_weights

    module = _residual()
    x = torch.randn(3, 5, 64)
    with torch.inference_mode():
        expected = module(x)
    shared = share_weights(residual_onnx, module, transposed=True)
    params = dict(module.named_parameters())
    values = dict(zip(shared.names, shared.values))
    for initializer, param in shared.sharing.transposed.items():
        p = params[param]
        assert not p.is_contiguous() and p.t().is_contiguous()
        assert values[initializer].data_ptr() == p.data_ptr()  # ORT reads the memory eager reads
    with torch.inference_mode():
        got = module(x)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)  # the same values, another GEMM layout
    session = shared.open()
    onnx_out = session.run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(onnx_out, expected.numpy(), rtol=1e-4, atol=1e-5)
    del session
    shared.views.restore()
    assert all(p.is_contiguous() for p in module.parameters())
    with torch.inference_mode():
        assert torch.equal(module(x), expected)


def test_a_planted_weight_change_is_caught_with_transposed_sharing(residual_onnx):
    module = _residual()
    with torch.no_grad():
        module.blocks[1].fc1.weight.mul_(1.01)
    report = check_parity(module, residual_onnx, ["x:batch,seq,64"], share_weights="always", samples=1)
    assert not report.passed
    assert set(report.weights["transposed"].values()) == FC_WEIGHTS - {"blocks.1.fc1.weight"}
    assert list(report.weights["not_shared"].values()) == ["its bytes differ from blocks.1.fc1.weight transposed"]
    assert report.weights["not_shared_bytes"] == 64 * 256 * 4


def test_a_write_through_a_transposed_view_is_caught(residual_onnx):
    touching = _WritesThroughItsView().eval()
    touching.load_state_dict(_residual().state_dict())
    shared = check_parity(touching, residual_onnx, ["x:batch,seq,64"], share_weights="always", samples=1)
    assert not shared.passed
    assert shared.weights["transposed_tensors"] == 4
    assert any("changed 1 shared weight(s) in place" in f and "blocks.0.fc1.weight (as val_" in f
               for f in shared.failures), shared.failures
    assert check_parity(touching, residual_onnx, ["x:batch,seq,64"], share_weights="never", samples=1).passed


def test_tiny_bert_shares_its_transposed_weights(tmp_path):
    from transformers import BertConfig, BertModel

    from onnxtax.export import export_model

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=64)
            self.bert = BertModel(config)

        def forward(self, input_ids, attention_mask):
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
            return out.last_hidden_state, out.pooler_output

    torch.manual_seed(0)
    model = Encoder().eval()
    path = tmp_path / "bert.onnx"
    specs = ["input_ids:[batch,seq]:int64", "attention_mask:[batch,seq]:int64"]
    assert export_model(model, path, specs).error is None
    report = check_parity(model, path, specs, share_weights="always", samples=1)
    assert report.passed, report.failures
    weights = report.weights
    per_layer = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                 "intermediate.dense", "output.dense")
    assert set(weights["transposed"].values()) == {f"bert.encoder.layer.{i}.{m}.weight" for i in (0, 1)
                                                   for m in per_layer}
    assert weights["not_shared_tensors"] == 0 and weights["not_shared_bytes"] == 0
    # the embeddings and the pooler (a Gemm on 2-D input) are shared by name, as they are
    assert weights["shared_tensors"] == 12 + 3


def test_parity_peak_memory_with_transposed_weights_stays_under_1_6x_the_weights(tmp_path):
    """The 3-D input case: every weight is stored transposed under a generated name (MatMul, as the
    exporters write a Linear on batch x seq x d). Shared through transposed views: measured 1.40x here
    at 100 MB (24 x 4.2 MB); loading them from the file beside the eager model's (before) measured 2.37x."""
    width, layers = 1024, 24
    source, path = write_matmul_stack(tmp_path, width, layers)
    result = _parity_peak(f"{source}:build", path, f"x:batch,seq,{width}", "always")
    assert result["passed"]
    weights = layers * (width * width + width) * 4
    assert result["weights"]["transposed_bytes"] == layers * width * width * 4
    ratio = (result["peak"] - result["base"]) / weights
    assert ratio <= 1.6, f"parity added {ratio:.2f}x the weights ({result})"
