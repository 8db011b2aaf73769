"""onnxtax.core.inputs: one reading of graph inputs and one matching rule, so every stage accepts
and refuses the same inputs for the same artifact."""

from __future__ import annotations

from pathlib import Path

import pytest

from onnxtax.bench import run_bench
from onnxtax.core import InputSpecError
from onnxtax.core.artifact import axis_name, graph_inputs, load_graph
from onnxtax.core import resolve_inputs
from onnxtax.parity import check_parity
from tests.models import tiny


def _mlp_graph(path: Path, x_dims: list) -> Path:
    """Tiny's weights as an ONNX graph (Gemm-Relu-Gemm-Sigmoid) with the given input dims."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    net = tiny.Tiny().net
    weights = {name: p.detach().numpy().astype(np.float32) for name, p in net.state_dict().items()}
    inits = [helper.make_tensor(n.replace(".", "_"), TensorProto.FLOAT, w.shape, w.ravel()) for n, w in
             weights.items()]
    nodes = [helper.make_node("Gemm", ["x", "0_weight", "0_bias"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "2_weight", "2_bias"], ["z"], transB=1),
             helper.make_node("Sigmoid", ["z"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [x_dims[0], 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return _mlp_graph(tmp_path_factory.mktemp("inputs") / "mlp.onnx", ["batch", 16])


def test_one_dim_naming_rule():
    assert axis_name("x", 0, 4) == 4
    assert axis_name("x", 0, "batch") == "batch"
    assert axis_name("x", 1, "s77*5") == "x_dim1"  # an expression is no axis name
    assert axis_name("x", 2, None) == "x_dim2"
    assert axis_name("x", 3, -1) == "x_dim3"


def test_graph_inputs_name_unnamed_axes_after_the_input(tmp_path):
    path = _mlp_graph(tmp_path / "m.onnx", [None, 16])
    [spec] = graph_inputs(load_graph(path))
    assert (spec.name, spec.dims, spec.dtype) == ("x", ("x_dim0", 16), "float32")


@pytest.mark.parametrize("given, source", [(None, "onnx-graph"), (["x:batch,16"], "arguments")])
def test_parity_and_bench_report_the_same_source_labels(artifact, given, source):
    parity = check_parity(tiny.spec("Tiny"), artifact, given, samples=1, dims={"batch": [2]})
    bench = run_bench(tiny.spec("Tiny"), artifact, given, batch_sizes=[2], min_time=0.01, warmup=1,
                      cold_start=False)
    assert parity.passed and bench.passed
    assert parity.input_source == bench.input_source == resolve_inputs(artifact, given).source == source
    assert parity.to_dict()["input_source"] == bench.to_dict()["input_source"] == source


CASES = [
    (["x:batch,16"], None),
    (["inp:n,16"], None),  # another name, same count: matched by position, in both stages
    (["x:batch,16:int64"], "the ONNX graph takes float32"),
    (["x:batch,15"], "is fixed at 16"),
    (["x:batch,16,1"], "has 3 dims"),
    (["a:batch,16", "b:batch,16"], "do not match the ONNX graph's inputs"),
]


@pytest.mark.parametrize("given, refused", CASES, ids=[" ".join(g) for g, _ in CASES])
def test_parity_and_bench_accept_and_refuse_the_same_inputs(artifact, given, refused):
    """The same artifact and the same --input: both stages run, or both refuse with the same words."""
    outcomes = []
    for stage in (lambda: check_parity(tiny.Tiny(), artifact, given, samples=1),
                  lambda: run_bench(None, artifact, given, batch_sizes=[2], min_time=0.01, warmup=1,
                                    cold_start=False)):
        try:
            report = stage()
            outcomes.append(("ran", bool(report)))
        except InputSpecError as exc:
            outcomes.append(("refused", exc.message))
    if refused is None:
        assert outcomes == [("ran", True), ("ran", True)]
    else:
        assert [o[0] for o in outcomes] == ["refused", "refused"] and outcomes[0][1] == outcomes[1][1]
        assert refused in outcomes[0][1]


def test_a_range_for_no_input_is_refused_by_the_resolver(artifact):
    with pytest.raises(InputSpecError, match="--range 'ids' names no input"):
        resolve_inputs(artifact, None, ranges={"ids": (0, 5)})
