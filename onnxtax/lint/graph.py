"""Walking an ONNX model: every node with the path of the subgraph holding it (If/Loop/Scan
bodies, model-local functions), and the user's file:line the exporter recorded on a node."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Iterator

STANDARD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training", "ai.onnx.preview"}
CONTROL_FLOW_OPS = {"If", "Loop", "Scan", "SequenceMap"}
STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"


@dataclass
class NodeRef:
    node: Any  # onnx.NodeProto
    subgraph: str | None  # None = main graph
    graph: Any  # the GraphProto (or FunctionProto) holding the node
    index: int

    @property
    def label(self) -> str:
        return self.node.name or f"{self.node.op_type}_{self.index}"


def iter_nodes(model) -> Iterator[NodeRef]:
    """Every node in the main graph, nested subgraphs (If/Loop/Scan bodies) and model-local functions."""

    def walk(graph, path: str | None) -> Iterator[NodeRef]:
        for i, node in enumerate(graph.node):
            ref = NodeRef(node, path, graph, i)
            yield ref
            for attr in node.attribute:
                subs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
                for sub in subs:
                    yield from walk(sub, f"{path}/{ref.label}/{attr.name}" if path else f"{ref.label}/{attr.name}")

    yield from walk(model.graph, None)
    for fn in model.functions:
        yield from walk(fn, f"function {fn.domain}::{fn.name}")


def iter_graphs(model) -> Iterator[tuple[Any, str | None]]:
    """(GraphProto, subgraph path) for the main graph and every nested graph."""
    yield model.graph, None
    for ref in iter_nodes(model):
        for attr in ref.node.attribute:
            subs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
            for sub in subs:
                path = f"{ref.subgraph}/{ref.label}/{attr.name}" if ref.subgraph else f"{ref.label}/{attr.name}"
                yield sub, path


_FRAME = re.compile(r'File "([^"]+)", line (\d+)')
_INTERNAL = re.compile(r"site-packages|dist-packages|[/\\]torch[/\\]|[/\\]onnxscript[/\\]|[/\\]onnxtax[/\\]")


def user_frame(stack_trace: str, prefer_file: str | None = None) -> str | None:
    """The last user frame ('file:line') of a Python stack trace text; frames inside torch,
    generated code (<eval_with_key>) and site-packages are skipped."""
    frames = [(f, int(n)) for f, n in _FRAME.findall(stack_trace or "")]
    if prefer_file:
        want = os.path.realpath(prefer_file)
        mine = [fr for fr in frames if os.path.realpath(fr[0]) == want]
        if mine:
            return f"{mine[-1][0]}:{mine[-1][1]}"
    user = [fr for fr in frames if not fr[0].startswith("<") and not _INTERNAL.search(fr[0])]
    return f"{user[-1][0]}:{user[-1][1]}" if user else None


def node_source_location(node) -> str | None:
    for prop in node.metadata_props:
        if prop.key == STACK_TRACE_KEY:
            return user_frame(prop.value)
    return None



def op_name(node) -> str:
    return f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type

