"""Walking an ONNX model: every node with the path of the subgraph holding it (If/Loop/Scan
bodies, model-local functions), and the user's file:line the exporter recorded on a node."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from onnxtax.core.frames import frames_in_text, user_frame

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


def subgraphs(ref: NodeRef) -> Iterator[tuple[Any, str]]:
    """The graphs a node holds (If branches, Loop and Scan bodies), each with its subgraph path."""
    for attr in ref.node.attribute:
        for sub in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
            yield sub, f"{ref.subgraph}/{ref.label}/{attr.name}" if ref.subgraph else f"{ref.label}/{attr.name}"


def iter_nodes(model) -> Iterator[NodeRef]:
    """Every node in the main graph, nested subgraphs (If/Loop/Scan bodies) and model-local functions."""

    def walk(graph, path: str | None) -> Iterator[NodeRef]:
        for i, node in enumerate(graph.node):
            ref = NodeRef(node, path, graph, i)
            yield ref
            for sub, sub_path in subgraphs(ref):
                yield from walk(sub, sub_path)

    yield from walk(model.graph, None)
    for fn in model.functions:
        yield from walk(fn, f"function {fn.domain}::{fn.name}")


def iter_graphs(model) -> Iterator[tuple[Any, str | None]]:
    """(GraphProto, subgraph path) for the main graph and every nested graph."""
    yield model.graph, None
    for ref in iter_nodes(model):
        yield from subgraphs(ref)


def node_source_location(node) -> str | None:
    """The user's file:line in the stack trace the dynamo exporter records on a node."""
    for prop in node.metadata_props:
        if prop.key == STACK_TRACE_KEY:
            frame = user_frame(frames_in_text(prop.value))
            return frame.location if frame else None
    return None
