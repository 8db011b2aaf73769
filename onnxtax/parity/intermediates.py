"""Intermediate values of both sides, for localisation: eager module outputs through forward
hooks, ONNX values through extra graph outputs, and the map between them that the
exporters leave in the graph.

Where a node came from: the dynamo exporter records `pkg.torch.onnx.name_scopes`
(`['', 'layers.0', 'layers.0.linear', 'linear']`: module paths, then the FX node),
`pkg.torch.onnx.class_hierarchy` and `pkg.torch.onnx.stack_trace` on every node it
writes; the TorchScript exporter names nodes after the module scopes they ran in
(`/layers.0/linear/Gemm`). Nodes neither explains (added by an optimiser) have no scope.

ONNX values are fetched by adding graph outputs to a copy of the graph, one bounded set
of values per session run, on the provider being examined. No copy of the graph holds weight
bytes: the graph is read without them (onnxtax.core.skeleton.read_skeleton). A CPU session takes the
weights parity shared with the eager model (onnxtax.core.sharing.SharedWeights: OrtValues over the
parameters' memory, pre-packing off) and reads only the others from the model's file; without
shared weights, and on every other provider, the session reads them all from the file.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
CLASS_HIERARCHY_KEY = "pkg.torch.onnx.class_hierarchy"
STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"
FX_NODE_KEY = "pkg.torch.onnx.fx_node"
_FX_TARGET = re.compile(r"target=(?:torch\.ops\.)?([\w.]+)")
_EXTERNAL_FOLDER = "session.model_external_initializers_file_folder_path"
_TORCH_FILE = re.compile(r"[/\\]torch[/\\]|[/\\]onnxscript[/\\]|^<")


# --------------------------------------------------------------------------- the ONNX side


@dataclass
class GraphNode:
    index: int
    name: str
    op_type: str
    inputs: list[str]
    outputs: list[str]
    scope: str | None  # deepest module path ('' = the root module's own forward), None = unknown
    class_name: str | None = None
    stack_trace: str | None = None
    fx_name: str | None = None  # dynamo: the FX node this ONNX node lowers ('scaled_dot_product_attention')
    fx_target: str | None = None  # dynamo: its target ('aten.scaled_dot_product_attention.default')


class GraphMap:
    """The ONNX graph as module scopes: which nodes each module path owns, and the values
    that cross each module's boundary."""

    def __init__(self, artifact: Any, shared: Any = None):
        from onnxtax.core.artifact import open_artifact

        artifact = open_artifact(artifact)
        self.path = artifact.path
        # without the weights' bytes, also when they are inside the .onnx: every copy of the graph
        # below (extra outputs, module subgraphs) stays small; sessions read the weights from the file
        # or, on CPU, take parity's shared ones (`shared`: a SharedWeights or None)
        self.proto, self.stored = artifact.graph, artifact.tensors
        self.shared = shared
        graph = self.proto.graph
        self.initializers = {i.name for i in graph.initializer}
        self.graph_inputs = [i.name for i in graph.input if i.name not in self.initializers]
        self.graph_outputs = [o.name for o in graph.output]
        self.exporter = "unknown"
        self.nodes: list[GraphNode] = []
        for i, node in enumerate(graph.node):
            props = {p.key: p.value for p in node.metadata_props}
            scope, cls = _scope_of(node.name, props)
            if NAME_SCOPES_KEY in props:
                self.exporter = "dynamo"
            elif self.exporter == "unknown" and node.name.startswith("/"):
                self.exporter = "torchscript"
            fx_name, fx_target = _fx_of(props)
            self.nodes.append(GraphNode(i, node.name or f"{node.op_type}_{i}", node.op_type, list(node.input),
                                        list(node.output), scope, cls, props.get(STACK_TRACE_KEY), fx_name, fx_target))
        self.producer = {out: n.index for n in self.nodes for out in n.outputs if out}
        self.consumers: dict[str, list[int]] = {}
        for n in self.nodes:
            for name in n.inputs:
                if name:
                    self.consumers.setdefault(name, []).append(n.index)
        self.members: dict[str, list[int]] = {}
        for n in self.nodes:
            if n.scope is None:
                continue
            for prefix in _prefixes(n.scope):
                self.members.setdefault(prefix, []).append(n.index)
        # values that depend on a graph input (the rest is foldable: weights, constants, shapes of weights)
        self.dynamic = set(self.graph_inputs)
        data = set(self.graph_inputs)  # values that depend on the inputs' values, not only on their shapes
        for n in self.nodes:
            if any(v in self.dynamic for v in n.inputs) or (not n.inputs and n.op_type not in (
                    "Constant", "ConstantOfShape")):
                self.dynamic.update(o for o in n.outputs if o)
            if n.op_type not in ("Shape", "Size") and (any(v in data for v in n.inputs) or not n.inputs and (
                    n.op_type not in ("Constant", "ConstantOfShape"))):
                data.update(o for o in n.outputs if o)
        self.shape_only = self.dynamic - data  # sizes computed from the inputs' shapes (batch, seq)

    def owned(self, path: str) -> list[int]:
        return self.members.get(path, [])

    def boundary_outputs(self, path: str) -> list[str]:
        """Values made inside the module and used outside it (or returned by the graph)."""
        inside = set(self.owned(path))
        outs = []
        for i in sorted(inside):
            for v in self.nodes[i].outputs:
                if v and v in self.dynamic and (v in self.graph_outputs or any(
                        c not in inside for c in self.consumers.get(v, []))):
                    outs.append(v)
        return outs

    def boundary_inputs(self, path: str) -> list[str]:
        """Input-dependent values the module's nodes read from outside it."""
        inside = set(self.owned(path))
        seen: dict[str, None] = {}
        for i in sorted(inside):
            for v in self.nodes[i].inputs:
                if v and v in self.dynamic and self.producer.get(v) not in inside:
                    seen.setdefault(v)
        return list(seen)

    def own_nodes(self, path: str) -> list[GraphNode]:
        """Nodes of the module's own forward, not of its children."""
        return [self.nodes[i] for i in self.owned(path) if self.nodes[i].scope == path]

    def with_outputs(self, names: Iterable[str]) -> bytes:
        """The model with these values as extra outputs, serialised without its weights' data."""
        import onnx

        model = onnx.ModelProto()
        model.CopyFrom(self.proto)
        present = set(self.graph_outputs)
        for name in dict.fromkeys(names):
            if name not in present:
                model.graph.output.append(onnx.ValueInfoProto(name=name))
        return model.SerializeToString()

    def subgraph(self, path: str, input_types: dict[str, np.ndarray], outputs: list[str]) -> bytes:
        """The module's nodes alone (plus the constant nodes they read), with its boundary inputs as
        graph inputs: run on eager's inputs, it tells a local error from an inherited one."""
        import onnx
        from onnx import helper

        inside = set(self.owned(path))
        needed = set(inside)
        stack = [v for i in inside for v in self.nodes[i].inputs]
        while stack:  # constant producers the module reads (Constant, shapes of weights)
            v = stack.pop()
            p = self.producer.get(v)
            if p is not None and p not in needed and v not in self.dynamic:
                needed.add(p)
                stack.extend(self.nodes[p].inputs)
        src = self.proto.graph
        used = {v for i in needed for v in self.nodes[i].inputs}
        graph = helper.make_graph(
            [src.node[i] for i in sorted(needed)], f"{path or 'root'}_alone",
            [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype),
                                           [None] * arr.ndim) for name, arr in input_types.items()],
            [onnx.ValueInfoProto(name=o) for o in outputs],
            initializer=[t for t in src.initializer if t.name in used])
        model = helper.make_model(graph, opset_imports=list(self.proto.opset_import))
        model.ir_version = self.proto.ir_version
        model.functions.extend(self.proto.functions)
        return model.SerializeToString()

    def shares_with(self, request: Any) -> bool:
        """Whether a session on `request`'s provider takes parity's shared weights (CPU only:
        other providers compile or copy the weights into their own memory)."""
        return self.shared is not None and request.name == "CPUExecutionProvider"

    def session(self, model_bytes: bytes, request: Any, *, opt_level: str, threads: int | None):
        """A session on the provider under examination; weights not shared are read from the model's folder."""
        import onnxruntime as ort

        from onnxtax.core.providers import session_options

        so = session_options(opt_level=opt_level, threads=threads, record_placement=False)
        so.add_session_config_entry(_EXTERNAL_FOLDER, str(self.path.resolve().parent))
        if self.shares_with(request):
            # as parity's CPU session: the OrtValues by reference, no pre-packed copy of them
            so.add_session_config_entry("session.disable_prepacking", "1")
            for name, value in zip(self.shared.names, self.shared.values):
                so.add_initializer(name, value)  # ORT ignores names a subgraph does not have
        return ort.InferenceSession(model_bytes, so, providers=[request.name],
                                    provider_options=[dict(request.options)])

    def initializer_array(self, name: str) -> np.ndarray | None:
        """One initializer's values, its bytes read once from the file (no proto copy of them)."""
        from onnx import helper, numpy_helper
        from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

        stored = self.stored.get(name)
        if stored is not None and stored.length >= 0:
            try:
                dtype = np.dtype(helper.tensor_dtype_to_np_dtype(stored.data_type))
            except (KeyError, TypeError):
                dtype = None
            if dtype is not None and stored.length == dtype.itemsize * int(np.prod(stored.dims, dtype=np.int64)):
                count = stored.length // dtype.itemsize
                return np.fromfile(stored.file, dtype=dtype, count=count, offset=stored.offset).reshape(stored.dims)
        for t in self.proto.graph.initializer:
            if t.name == name:
                tensor = type(t)()
                tensor.CopyFrom(t)
                if uses_external_data(tensor):
                    load_external_data_for_tensor(tensor, str(self.path.resolve().parent))
                return numpy_helper.to_array(tensor)
        return None


def _prefixes(scope: str) -> list[str]:
    """'' and every module path above and at `scope`: 'a.b.0' -> ['', 'a', 'a.b', 'a.b.0']."""
    if not scope:
        return [""]
    parts = scope.split(".")
    return [""] + [".".join(parts[:k]) for k in range(1, len(parts) + 1)]


def _fx_of(props: dict[str, str]) -> tuple[str | None, str | None]:
    """The FX node a dynamo-exported ONNX node lowers: its name (the last name scope) and target."""
    raw = props.get(NAME_SCOPES_KEY)
    if raw is None:
        return None, None
    try:
        scopes = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return None, None
    m = _FX_TARGET.search(props.get(FX_NODE_KEY, ""))
    return (scopes[-1] if scopes else None), (m.group(1) if m else None)


def _scope_of(name: str, props: dict[str, str]) -> tuple[str | None, str | None]:
    raw = props.get(NAME_SCOPES_KEY)
    if raw is not None:
        try:
            scopes = ast.literal_eval(raw)
            classes = ast.literal_eval(props.get(CLASS_HIERARCHY_KEY, "[]"))
        except (ValueError, SyntaxError):
            return None, None
        # the last entry is the FX node itself; the ones before it are module paths, outermost first
        modules = scopes[:-1] if len(scopes) > 1 else [""]
        cls = classes[len(modules) - 1] if len(classes) >= len(modules) else None
        return modules[-1], cls
    if name.startswith("/"):
        # TorchScript: '/layers.0/linear/Gemm'; Sequential children repeat the parent ('/net/net.0/Gemm')
        path = ""
        for part in name.strip("/").split("/")[:-1]:
            path = part if (not path or part.startswith(path + ".")) else f"{path}.{part}"
        return path, None
    return None, None


# --------------------------------------------------------------------------- the eager side


@dataclass
class ModuleCall:
    """One module's forward in an eager run, in the order forwards returned (children first)."""

    path: str
    class_name: str
    calls: int = 0
    output_shapes: list[tuple[int, ...]] = field(default_factory=list)
    output_bytes: int = 0


class EagerCapture:
    """Forward hooks on every submodule. `keep_outputs`/`keep_inputs` name the module paths whose
    tensors are copied out; other modules only record that (and in which order) they ran."""

    def __init__(self, module: Any, keep_outputs: Iterable[str] = (), keep_inputs: Iterable[str] = ()):
        self.module = module
        self.keep_outputs, self.keep_inputs = set(keep_outputs), set(keep_inputs)
        self.calls: dict[str, ModuleCall] = {}
        self.order: list[str] = []
        self.outputs: dict[str, list[np.ndarray]] = {}
        self.inputs: dict[str, list[np.ndarray]] = {}
        self.input_labels: dict[str, list[str]] = {}  # 'input 0' (positional), 'attention_mask' (keyword)

    def run(self, tensors: list[Any]) -> list[np.ndarray]:
        import torch

        from onnxtax.core.inputs import flatten_outputs

        handles = []
        for path, mod in self.module.named_modules():
            if not path:
                continue
            handles.append(mod.register_forward_pre_hook(self._pre_hook(path), with_kwargs=True))
            handles.append(mod.register_forward_hook(self._hook(path, type(mod).__name__)))
        try:
            with torch.inference_mode():
                result = self.module(*tensors)
        finally:
            for h in handles:
                h.remove()
        return [to_numpy(t) for _, t in flatten_outputs(result)]

    def _pre_hook(self, path: str):
        def hook(_mod, args, kwargs):
            if path in self.keep_inputs and path not in self.inputs:
                labelled = [(f"input {i}", t) for i, a in enumerate(args) for t in _tensors([a])]
                labelled += [(k, t) for k, v in kwargs.items() for t in _tensors([v])]
                self.inputs[path] = [to_numpy(t) for _, t in labelled]
                self.input_labels[path] = [label for label, _ in labelled]
        return hook

    def _hook(self, path: str, class_name: str):
        def hook(_mod, _args, output):
            call = self.calls.get(path)
            if call is None:
                call = self.calls[path] = ModuleCall(path, class_name)
                self.order.append(path)
            call.calls += 1
            tensors = _tensors([output])
            if call.calls == 1:
                call.output_shapes = [tuple(t.shape) for t in tensors]
                call.output_bytes = sum(t.numel() * t.element_size() for t in tensors)
                if path in self.keep_outputs:
                    self.outputs[path] = [to_numpy(t) for t in tensors]
        return hook


def _tensors(values: list[Any]) -> list[Any]:
    from onnxtax.core.inputs import flatten_outputs

    return [t for _, t in flatten_outputs(tuple(values))]


def to_numpy(t: Any) -> np.ndarray:
    import torch

    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.cpu().numpy().copy()


# --------------------------------------------------------------------------- source lines


@dataclass
class SourceLine:
    file: str
    line: int
    function: str | None = None
    code: str = ""
    origin: str = "user"  # "user" | "library": whose frame it is
    user_frame: str | None = None  # the user's 'file:line' that led there, when the line is a library's

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def to_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "function": self.function, "code": self.code,
                "origin": self.origin, "user_frame": self.user_frame}


def frame_of_stack(stack_trace: str | None) -> SourceLine | None:
    """The innermost frame outside torch of an exporter stack trace: the line that computes the
    value, be it the user's or a library's (a Hugging Face modeling file); then also the user's
    line that led there."""
    from onnxtax.core.frames import frames_in_text, is_library, user_frame

    frames = frames_in_text(stack_trace)
    outside = [f for f in frames if not _TORCH_FILE.search(f.file)]
    if not outside:
        return None
    inner, function = outside[-1], _function_of(stack_trace, outside[-1])
    if not is_library(inner.file):
        return SourceLine(inner.file, inner.line, function, inner.code, "user")
    mine = user_frame(frames)
    return SourceLine(inner.file, inner.line, function, inner.code, "library", mine.location if mine else None)


def _function_of(stack_trace: str | None, frame: Any) -> str | None:
    m = re.search(rf'File "{re.escape(frame.file)}", line {frame.line}, in (\S+)', stack_trace or "")
    return m.group(1) if m else None


def forward_of(module: Any, path: str) -> SourceLine | None:
    """Where the forward of the module at `path` (or of its nearest ancestor outside torch) is defined."""
    import inspect

    parts = path.split(".") if path else []
    for k in range(len(parts), -1, -1):
        try:
            mod = module.get_submodule(".".join(parts[:k]))
        except AttributeError:
            continue
        fwd = getattr(type(mod), "forward", None)
        try:
            file = inspect.getsourcefile(fwd)
            _, line = inspect.getsourcelines(fwd)
        except (TypeError, OSError):
            continue
        if file and not _TORCH_FILE.search(file):
            from onnxtax.core.frames import is_library

            return SourceLine(file, line, f"{type(mod).__name__}.forward", line_text(file, line),
                              "library" if is_library(file) else "user")
    return None


def branch_lines(module: Any) -> list[int]:
    """Lines of `if`/`while`/conditional expressions in a module's forward that test something
    other than `self.training`: where a traced export freezes one branch."""
    import inspect
    import textwrap

    fwd = getattr(type(module), "forward", None)
    try:
        if _TORCH_FILE.search(inspect.getsourcefile(fwd) or "<"):
            return []  # torch's own modules: their branches are on arguments and flags, not the user's data
        lines, start = inspect.getsourcelines(fwd)
    except (TypeError, OSError):
        return []
    try:
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.If, ast.While, ast.IfExp)):
            test = ast.unparse(node.test)
            if "training" not in test and not test.startswith(("isinstance", "self.", "not self.")):
                found.append(start + node.lineno - 1)
    return sorted(set(found))


def line_text(path: str, line: int) -> str:
    import linecache

    return linecache.getline(os.fspath(path), line).strip()
