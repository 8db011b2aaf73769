"""The ops of one module, on both sides, and which eager op stands for which ONNX nodes.

Eager side (`OpCapture`): a torch.overrides.TorchFunctionMode, entered by the module's forward
pre-hook and left by its forward hook, sees every torch call made while the module's own forward
runs, helper functions included (GPT-2's attention calls `sdpa_attention_forward`, which calls
`torch.nn.functional.scaled_dot_product_attention`); calls made inside its submodules' forwards
are theirs, not its own, and are left out. Each call is recorded with the frames that made it
(the line that calls the op first, then outward) and its output shapes; a second run copies the
outputs and inputs of the ops to compare, and nothing else.

ONNX side (`graph_ops`): the dynamo exporter writes on every node the FX node it lowers (the last
of `pkg.torch.onnx.name_scopes`, and `pkg.torch.onnx.fx_node` with its target, e.g.
`aten.scaled_dot_product_attention.default`) and the stack of module forwards that called it
(`pkg.torch.onnx.stack_trace`). The nodes of one FX node are one op group: its outputs are the
values used outside the group, its inputs the input-dependent values it reads from outside. The
TorchScript exporter leaves only the module scope in node names (`/attn/Mul`): each node is a
group and its op type its kind.

Pairing (`pair_ops`): an eager op and a group of the same kind (`Tensor.view` ~ `aten.view` ~
`Reshape`) whose innermost stack line is one of the op's frames (dynamo; TorchScript has no lines),
in the order both ran. When a (kind, line) has as many eager ops as groups they pair in order;
otherwise only a group whose output has the eager op's shape, and is the only one, pairs with it.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from onnxtax.parity.intermediates import GraphMap, SourceLine, line_text, to_numpy

# frames never kept: onnxtax's own (the capture) and torch's module-call plumbing, which no stack trace of
# the exporter holds either
_SKIP = re.compile(r"[/\\]onnxtax[/\\]|[/\\]torch[/\\]nn[/\\]modules[/\\]module\.py$|[/\\]torch[/\\]overrides\.py$")
_TORCH = re.compile(r"[/\\]torch[/\\]|[/\\]onnxscript[/\\]|^<")
_FRAMES = 48  # frames kept per call: enough to reach the user's forward through a dozen nested modules

# one spelling per op, for torch functions, Tensor methods, aten targets and ONNX op types
_ALIASES = {
    "truediv": "div", "rtruediv": "div", "itruediv": "div", "floordiv": "div", "radd": "add", "iadd": "add",
    "rsub": "sub", "isub": "sub", "rmul": "mul", "imul": "mul", "rpow": "pow", "reshape": "view",
    "unsafe_view": "view", "view_as": "view", "flatten": "view", "slice": "getitem", "select": "getitem",
    "index": "getitem", "bmm": "matmul", "mm": "matmul", "addmm": "linear", "t": "transpose", "permute": "transpose",
    "swapaxes": "transpose", "split_with_sizes": "split", "unsafe_split": "split", "chunk": "split",
    "clone": "contiguous", "expand_as": "expand", "scaled_dot_product_attention": "scaled_dot_product_attention",
}
_ONNX_KINDS = {
    "MatMul": "matmul", "Gemm": "linear", "Mul": "mul", "Add": "add", "Sub": "sub", "Div": "div", "Pow": "pow",
    "Softmax": "softmax", "LogSoftmax": "log_softmax", "Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid",
    "Transpose": "transpose", "Reshape": "view", "Where": "where", "Neg": "neg", "Exp": "exp", "Log": "log",
    "Sqrt": "sqrt", "Erf": "erf", "Abs": "abs", "Clip": "clamp", "LayerNormalization": "layer_norm",
    "Concat": "cat", "Split": "split", "Expand": "expand", "ReduceMean": "mean", "ReduceSum": "sum",
    "ReduceMax": "amax", "Cos": "cos", "Sin": "sin", "Gelu": "gelu", "Unsqueeze": "unsqueeze", "Squeeze": "squeeze",
}


def kind_of(name: str) -> str:
    """'torch.Tensor.view', 'aten.view.default', 'torch.Tensor.__add__', 'Reshape' -> 'view', 'view', 'add', 'view'."""
    if name in _ONNX_KINDS:
        return _ONNX_KINDS[name]
    parts = name.split(".")
    if parts[0] == "aten" and len(parts) > 1:
        base = parts[1]
    else:
        base = parts[-1]
        if base == "__get__" and len(parts) > 1:  # a property: Tensor.T.__get__
            base = parts[-2]
    base = base.strip("_").lower()
    return _ALIASES.get(base, base)


# --------------------------------------------------------------------------- the eager side
@dataclass
class OpRecord:
    """One torch call made by a module's own forward."""

    index: int  # its place among the module's own calls (the same in every run of the same input)
    function: str  # 'torch.nn.functional.scaled_dot_product_attention'
    kind: str
    frames: list[tuple[str, int, str]]  # (file, line, function): the line that calls it first, then outward
    shapes: list[tuple[int, ...]]
    out_bytes: int
    in_bytes: int

    def call_site(self) -> tuple[str, int, str] | None:
        """The line that calls the op: the innermost frame outside torch."""
        return next((f for f in self.frames if not _TORCH.search(f[0])), None)


class OpCapture:
    """The torch calls of the module at `path`'s own forward (its first call); `keep` names the
    op indices whose outputs and inputs are copied out (weights are named, never copied)."""

    def __init__(self, module: Any, path: str, keep: Iterable[int] = ()):
        self.module, self.path, self.keep = module, path, set(keep)
        self.records: list[OpRecord] = []
        self.outputs: dict[int, list[np.ndarray]] = {}
        # per op: (label, value or None for a weight, shape, is a weight)
        self.inputs: dict[int, list[tuple[str, np.ndarray | None, tuple[int, ...], bool]]] = {}

    def run(self, tensors: list[Any]) -> "OpCapture":
        import torch
        from torch.overrides import TorchFunctionMode, resolve_name

        target = self.module.get_submodule(self.path) if self.path else self.module
        weights = {id(t) for t in self.module.parameters()} | {id(t) for t in self.module.buffers()}
        stack: list[str] = []
        capture = self

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)  # the mode is off inside: this runs the op itself
                if stack and stack[-1] == capture.path:
                    capture.record(func, args, kwargs, out, weights, resolve_name)
                return out

        mode, entered, calls = Mode(), [], [0]

        def pre(path: str):
            def hook(_mod, _args):
                if path == self.path:
                    calls[0] += 1
                    if calls[0] == 1:
                        mode.__enter__()
                        entered.append(mode)
                stack.append(path)
            return hook

        def post(path: str):
            def hook(_mod, _args, _out):
                stack.pop()
                if path == self.path and entered and not stack:
                    entered.pop().__exit__(None, None, None)
            return hook

        handles = []
        for sub, mod in target.named_modules():
            path = ".".join(p for p in (self.path, sub) if p)
            handles += [mod.register_forward_pre_hook(pre(path)), mod.register_forward_hook(post(path))]
        try:
            with torch.inference_mode():
                self.module(*tensors)
        finally:
            while entered:  # the forward raised inside the module
                entered.pop().__exit__(None, None, None)
            for h in handles:
                h.remove()
        return self

    def record(self, func: Any, args: tuple, kwargs: dict, out: Any, weights: set[int], resolve_name: Any) -> None:
        outs = _tensors_in(out)
        if not outs:
            return  # sizes, flags, Python numbers: nothing to compare
        name = resolve_name(func) or getattr(func, "__qualname__", None) or repr(func)
        ins = _labelled(args, kwargs)
        index = len(self.records)
        self.records.append(OpRecord(index, name, kind_of(name), _frames(), [tuple(t.shape) for t in outs],
                                     sum(t.numel() * t.element_size() for t in outs),
                                     sum(t.numel() * t.element_size() for _, t in ins if id(t) not in weights)))
        if index in self.keep:
            self.outputs[index] = [to_numpy(t) for t in outs]
            self.inputs[index] = [(label, None if id(t) in weights else to_numpy(t), tuple(t.shape), id(t) in weights)
                                  for label, t in ins]


def _tensors_in(obj: Any) -> list[Any]:
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors_in(o)]
    return []


def _labelled(args: tuple, kwargs: dict) -> list[tuple[str, Any]]:
    """The tensors an op read, named as the call passed them: 'args[0]', 'args[0][1]', 'attn_mask'."""
    import torch

    out: list[tuple[str, Any]] = []

    def walk(obj: Any, label: str) -> None:
        if isinstance(obj, torch.Tensor):
            out.append((label, obj))
        elif isinstance(obj, (list, tuple)):
            for i, o in enumerate(obj):
                walk(o, f"{label}[{i}]")

    for i, a in enumerate(args):
        walk(a, f"args[{i}]")
    for k, v in kwargs.items():
        walk(v, k)
    return out


def _frames() -> list[tuple[str, int, str]]:
    frames, f = [], sys._getframe(1)
    while f is not None and len(frames) < _FRAMES:
        file = f.f_code.co_filename
        if not _SKIP.search(file):
            frames.append((file, f.f_lineno, getattr(f.f_code, "co_qualname", f.f_code.co_name)))
        f = f.f_back
    return frames


def source_of(record: OpRecord, class_name: str) -> tuple[SourceLine | None, list[str]]:
    """The line that calls the op (a library's line names the user's line that led there), and the
    frames from it out to the forward of the module (`class_name`.forward)."""
    from onnxtax.core.frames import Frame, is_library, user_frame

    site = record.call_site()
    if site is None:
        return None, []
    chain = []
    for file, line, function in record.frames[record.frames.index(site):]:
        if _TORCH.search(file):
            continue
        chain.append(f"{file}:{line}")
        if function == f"{class_name}.forward" or not is_library(file):
            break  # up to the module's forward, or the user's own line, whichever comes first
    file, line, function = site
    if not is_library(file):
        return SourceLine(file, line, function, line_text(file, line), "user"), chain
    mine = user_frame([Frame(f, n) for f, n, _ in reversed(record.frames)])
    return SourceLine(file, line, function, line_text(file, line), "library", mine.location if mine else None), chain


# --------------------------------------------------------------------------- the ONNX side
@dataclass
class GraphOp:
    """The ONNX nodes one FX node was lowered to (dynamo), or one node (TorchScript)."""

    name: str  # the FX node ('scaled_dot_product_attention') or the ONNX node ('/attn/Mul')
    target: str  # 'aten.scaled_dot_product_attention.default' or the op type
    kind: str
    line: tuple[str, int] | None  # the innermost frame of its stack trace (dynamo)
    nodes: list[int] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # values used outside the group
    inputs: list[str] = field(default_factory=list)  # input-dependent values read from outside it


def graph_ops(graph: GraphMap, path: str) -> list[GraphOp]:
    """The op groups of the module's own forward, in graph order."""
    from onnxtax.core.frames import frames_in_text

    own = [n for n in graph.nodes if n.scope == path]
    groups: dict[str, list] = {}
    for n in own:
        key = n.fx_name if graph.exporter == "dynamo" else n.name
        if key:
            groups.setdefault(key, []).append(n)
    ops = []
    for name, nodes in groups.items():
        inside = {n.index for n in nodes}
        produced = [v for n in nodes for v in n.outputs if v and v in graph.dynamic]
        outs = [v for v in produced if v in graph.graph_outputs or any(
            c not in inside for c in graph.consumers.get(v, []))]
        if name in produced:  # the value named after the FX node is the op's result
            outs = [name] + [v for v in outs if v != name]
        if not outs:
            continue
        ins = list(dict.fromkeys(v for n in nodes for v in n.inputs
                                 if v and v in graph.dynamic and graph.producer.get(v) not in inside))
        target = (nodes[0].fx_target or nodes[-1].op_type) if graph.exporter == "dynamo" else nodes[0].op_type
        frames = frames_in_text(nodes[0].stack_trace)
        line = (frames[-1].file, frames[-1].line) if frames else None
        ops.append(GraphOp(name, target, kind_of(target), line, sorted(inside), outs, ins))
    return sorted(ops, key=lambda g: g.nodes[0])


def pair_ops(records: list[OpRecord], gops: list[GraphOp]) -> list[tuple[OpRecord, list[GraphOp]]]:
    """Each eager op with its candidate groups (one when the order decides it), in eager order."""
    keyed: dict[tuple[str, tuple[str, int] | None], list[GraphOp]] = {}
    for g in gops:
        keyed.setdefault((g.kind, g.line), []).append(g)
    chosen: dict[tuple, list[OpRecord]] = {}
    for r in records:
        key = next(((r.kind, (f, n)) for f, n, _ in r.frames if (r.kind, (f, n)) in keyed), None)
        if key is None and (r.kind, None) in keyed:
            key = (r.kind, None)
        if key is not None:
            chosen.setdefault(key, []).append(r)
    pairs = []
    for key, rs in chosen.items():
        gs = keyed[key]
        pairs += [(r, [g]) for r, g in zip(rs, gs)] if len(rs) == len(gs) else [(r, list(gs)) for r in rs]
    return sorted(pairs, key=lambda p: p[0].index)


def describe_group(graph: GraphMap, g: GraphOp) -> str:
    """'Mul, MatMul, Where, Add, Softmax, IsNaN, Where, MatMul': the computing nodes of a group (no
    shape plumbing), in graph order."""
    plumbing = {"Shape", "Slice", "Concat", "Gather", "Unsqueeze", "Squeeze", "Constant", "ConstantOfShape",
                "Cast", "Range", "Identity"}
    types = [graph.nodes[i].op_type for i in g.nodes]
    computing = [t for t in types if t not in plumbing] or types
    return ", ".join(computing[:12]) + (", ..." if len(computing) > 12 else "")


__all__ = ["OpCapture", "OpRecord", "GraphOp", "graph_ops", "pair_ops", "kind_of", "source_of", "describe_group"]
