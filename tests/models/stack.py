"""N x Linear(W, W) with ReLU, as a model file (a SPEC: `build`, or `build_wrong` with one
parameter of layers.1 scaled by 1.01) and as the ONNX graph of the same model written with
onnx.helper: Gemm per layer, the exporter's initializer names and TorchScript-style node names
carrying the module scopes (`write_stack`), or, for a batch x seq x W input, MatMul over each
weight transposed under a generated name, as the exporters write a Linear on 3-D input
(`write_matmul_stack`). The weight-sharing tests of parity, export and localisation use it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

SOURCE = '''
import torch

WIDTH = {width}


class Stack(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(WIDTH, WIDTH) for _ in range({layers}))

    def forward(self, x):
        for layer in self.layers:
            x = torch.relu(layer(x))
        return x


def build():
    torch.manual_seed(0)
    return Stack().eval()


def build_wrong():
    """The exported model with layers.1's {what} scaled by 1.01."""
    model = build()
    with torch.no_grad():
        model.layers[1].{what}.mul_(1.01)
    return model
'''


def write_source(folder: Path, width: int, layers: int, what: str = "weight") -> Path:
    source = folder / f"stack_{width}_{layers}.py"
    source.write_text(SOURCE.format(width=width, layers=layers, what=what))
    return source


def write_stack(folder: Path, width: int, layers: int, *, transposed: tuple[int, ...] = (),
                what: str = "weight") -> tuple[Path, Path, list]:
    """(the model file, the .onnx, the Linear layers). The initializers carry the parameters'
    bytes, except the layers in `transposed`, stored as W^T and read with transB=0 (the same
    values computed, other bytes)."""
    source = write_source(folder, width, layers, what)
    torch.manual_seed(0)  # the same init order as Stack: one Linear after another
    linears = [torch.nn.Linear(width, width) for _ in range(layers)]
    nodes, inits, x = [], [], "x"
    for i, lin in enumerate(linears):
        w = lin.weight.detach().numpy()
        t = i in transposed
        inits.append(numpy_helper.from_array(np.ascontiguousarray(w.T) if t else w, f"layers.{i}.weight"))
        inits.append(numpy_helper.from_array(lin.bias.detach().numpy(), f"layers.{i}.bias"))
        nodes.append(helper.make_node("Gemm", [x, f"layers.{i}.weight", f"layers.{i}.bias"], [f"g{i}"],
                                      name=f"/layers.{i}/Gemm", transB=0 if t else 1))
        x = "y" if i == layers - 1 else f"r{i}"
        nodes.append(helper.make_node("Relu", [f"g{i}"], [x], name=f"/Relu_{i}"))
    graph = helper.make_graph(nodes, "stack", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 10
    path = folder / "stack.onnx"
    onnx.save(proto, str(path))
    return source, path, linears


def write_matmul_stack(folder: Path, width: int, layers: int) -> tuple[Path, Path]:
    """(the model file, the .onnx) of the same Stack on x:batch,seq,W: per layer MatMul(x, val_i)
    with val_i = W^T (a new initializer, no parameter's name), Add(bias), Relu."""
    source = write_source(folder, width, layers)
    torch.manual_seed(0)
    linears = [torch.nn.Linear(width, width) for _ in range(layers)]
    nodes, inits, x = [], [], "x"
    for i, lin in enumerate(linears):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(lin.weight.detach().numpy().T), f"val_{i}"))
        inits.append(numpy_helper.from_array(lin.bias.detach().numpy(), f"layers.{i}.bias"))
        nodes.append(helper.make_node("MatMul", [x, f"val_{i}"], [f"m{i}"], name=f"/layers.{i}/MatMul"))
        nodes.append(helper.make_node("Add", [f"m{i}", f"layers.{i}.bias"], [f"a{i}"], name=f"/layers.{i}/Add"))
        x = "y" if i == layers - 1 else f"r{i}"
        nodes.append(helper.make_node("Relu", [f"a{i}"], [x], name=f"/Relu_{i}"))
    dims = ["batch", "seq", width]
    graph = helper.make_graph(nodes, "stack", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 10
    path = folder / "matmul_stack.onnx"
    onnx.save(proto, str(path))
    return source, path
