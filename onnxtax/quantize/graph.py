"""The ONNX side of `onnxtax quantize`: building INT8 models with ORT's quantizers, the
PyTorch module each node came from, and which node's quantization adds the most error.

Where the error comes from is measured, not guessed: the FP32 and the quantized graph
both keep the FP32 graph's tensor names for the float tensors between nodes (QDQ inserts
Quantize/DequantizeLinear pairs beside them; dynamic quantization keeps each node's
output name), so both are run with those tensors (after their QDQ pair: the value the
next node reads) as extra outputs on the rows that fail. A node's *added* error is the
relative error of its output minus the largest relative error of its inputs, so error
inherited from upstream is not charged twice; a clipped graph input is charged to the
node reading it. This ranks the suspects; `onnxtax.quantize.run` then confirms the pick by
re-quantizing with each of the top few kept in FP32.
"""

from __future__ import annotations

import ast
import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from onnxtax.core.errors import InputSpecError

MODES = ("dynamic", "static")
FORMATS = ("qdq", "qoperator")
CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile",
                       "distribution": "Distribution"}
CALIBRATION_BATCH = 32
# ORT's CPU guidance (quantize_static docstring, x86 and ARM): uint8 activations, int8 weights
ACTIVATION_TYPE = "QUInt8"
WEIGHT_TYPE = "QInt8"


@dataclass(frozen=True)
class BuildSettings:
    """How one INT8 build is made; everything that changes the bytes is here."""

    mode: str  # "dynamic" | "static"
    format: str = "qdq"  # static only; dynamic quantization is ORT's integer-ops format
    per_channel: bool = False
    calibration_method: str = "minmax"
    excluded: tuple[str, ...] = ()

    @property
    def format_name(self) -> str:
        return "integer-ops" if self.mode == "dynamic" else self.format

    def to_dict(self) -> dict:
        return {"mode": self.mode, "format": self.format_name, "per_channel": self.per_channel,
                "calibration_method": self.calibration_method if self.mode == "static" else None,
                "activation_type": "QUInt8 (computed per batch)" if self.mode == "dynamic" else ACTIVATION_TYPE,
                "weight_type": WEIGHT_TYPE, "nodes_to_exclude": list(self.excluded)}


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """ORT's quantizer logs advice on every call (pre-processing, opset) and its histogram
    calibrators print progress to stdout, which would corrupt `--json -`; onnxtax reports once."""
    import contextlib
    import io

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def preprocess(source: Path, target: Path) -> str | None:
    """ORT's quant_pre_process (shape inference + graph optimisation); None on success, else why it was skipped."""
    import os
    import tempfile

    from onnxruntime.quantization import quant_pre_process

    here = os.getcwd()
    source, target = Path(source).absolute(), Path(target).absolute()  # before leaving the current folder
    try:
        # ORT's symbolic shape inference saves `sym_shape_infer_temp.onnx` (and its data) into the
        # current folder when it cannot infer every shape: run it in a scratch folder instead
        with _quiet_quantizer(), tempfile.TemporaryDirectory(prefix=".onnxtax-preprocess-") as scratch:
            os.chdir(scratch)
            try:
                quant_pre_process(str(source), str(target))
            finally:
                os.chdir(here)
        return None
    except Exception as exc:  # noqa: BLE001 - any failure: quantize the graph as exported
        return (f"ORT's quant_pre_process failed ({type(exc).__name__}: {str(exc)[:160]}); the graph is "
                "quantized as exported")


class _Reader:
    """CalibrationDataReader over rows of calibration arrays, CALIBRATION_BATCH rows per call."""

    def __init__(self, arrays: dict[str, Any], rows: int):
        self.arrays, self.rows, self.start = arrays, rows, 0

    def get_next(self) -> dict | None:
        if self.start >= self.rows:
            return None
        end = min(self.rows, self.start + CALIBRATION_BATCH)
        feed = {k: v[self.start:end] for k, v in self.arrays.items()}
        self.start = end
        return feed

    def rewind(self) -> None:
        self.start = 0


def build(settings: BuildSettings, source: Path, target: Path, calibration: dict[str, Any] | None) -> None:
    """Write the INT8 model for `settings` to `target`. Raises whatever ORT's quantizer raises."""
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    with _quiet_quantizer():
        if settings.mode == "dynamic":
            quantize_dynamic(str(source), str(target), per_channel=settings.per_channel,
                             weight_type=QuantType.QInt8, nodes_to_exclude=list(settings.excluded))
            return
        assert calibration is not None
        rows = int(next(iter(calibration.values())).shape[0])
        quantize_static(str(source), str(target), _Reader(calibration, rows),
                        quant_format=QuantFormat.QDQ if settings.format == "qdq" else QuantFormat.QOperator,
                        per_channel=settings.per_channel, activation_type=getattr(QuantType, ACTIVATION_TYPE),
                        weight_type=getattr(QuantType, WEIGHT_TYPE), nodes_to_exclude=list(settings.excluded),
                        calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[settings.calibration_method]))


def quantizable_op_types(mode: str, fmt: str) -> set[str]:
    from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry, QLinearOpsRegistry

    if mode == "dynamic":
        return set(IntegerOpsRegistry) | {"Gemm"}  # ORT 1.31 turns Gemm into MatMulInteger + Add
    return set(QDQRegistry if fmt == "qdq" else QLinearOpsRegistry)


# --------------------------------------------------------------------------- where nodes came from
@dataclass
class NodeOrigin:
    """An FP32 graph node and the PyTorch module it was exported from."""

    name: str
    op_type: str
    module: str | None  # "net.0" ("" for the root module), None when the exporter left no trace
    module_class: str | None
    source: str | None  # "file.py:26" from the dynamo exporter's stack trace

    def to_dict(self) -> dict:
        return {"node": self.name, "op_type": self.op_type, "module": self.module,
                "module_class": self.module_class, "source": self.source}


def node_origins(model) -> dict[str, NodeOrigin]:
    """Node name -> origin, from the dynamo exporter's metadata (`pkg.torch.onnx.name_scopes`,
    `pkg.torch.onnx.class_hierarchy`, `pkg.torch.onnx.stack_trace`) or, for the TorchScript
    exporter, the scope path in the node name (`/net/net.0/Gemm`)."""
    out = {}
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        module = module_class = source = None
        scopes = _literal_list(meta.get("pkg.torch.onnx.name_scopes"))
        if scopes:
            module = scopes[-2] if len(scopes) >= 2 else ""
            classes = _literal_list(meta.get("pkg.torch.onnx.class_hierarchy"))
            if classes and len(classes) >= 2:
                module_class = classes[-2].rsplit(".", 1)[-1]
        elif node.name.startswith("/"):
            module = _torchscript_module(node.name)
        trace = meta.get("pkg.torch.onnx.stack_trace")
        if trace:
            frames = re.findall(r'File "([^"]+)", line (\d+)', trace)
            user = [f for f in frames if not re.search(r"[/\\](site-packages|dist-packages|torch)[/\\]", f[0])]
            if user or frames:
                file, line = (user or frames)[-1]
                source = f"{Path(file).name}:{line}"
        out[node.name] = NodeOrigin(node.name, node.op_type, module, module_class, source)
    return out


def _torchscript_module(name: str) -> str:
    """`/bert/encoder/layer.0/attention/self/query/MatMul` -> `bert.encoder.layer.0.attention.self.query`;
    a container's child is scoped `net.0` under `net`, so `/net/net.0/Gemm` -> `net.0`."""
    path: list[str] = []
    for part in (p for p in name.split("/")[1:-1] if p):
        if path and part.startswith(path[-1] + "."):
            path[-1] = part
        else:
            path.append(part)
    return ".".join(path)


def _literal_list(text: str | None) -> list[str]:
    if not text:
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else []


def match_excludes(patterns: Sequence[str], origins: dict[str, NodeOrigin]) -> list[str]:
    """`--exclude` globs against node names and module paths; a glob matching nothing is an error."""
    import fnmatch

    quantizable = quantizable_op_types("dynamic", "qdq") | quantizable_op_types("static", "qdq") | \
        quantizable_op_types("static", "qoperator")
    chosen: list[str] = []
    for pattern in patterns:
        # a module path stands for the module's quantizable nodes (its Shape/Constant nodes stay as they are)
        hits = [n for n, o in origins.items()
                if fnmatch.fnmatchcase(n, pattern) or (o.module and o.op_type in quantizable
                                                        and fnmatch.fnmatchcase(o.module, pattern))]
        if not hits:
            modules = sorted({o.module for o in origins.values() if o.module})
            raise InputSpecError(f"--exclude '{pattern}' matches no node name or module path of the graph",
                                 f"modules: {', '.join(modules[:12]) or 'none recorded'}; nodes: "
                                 f"{', '.join(list(origins)[:8])}")
        chosen += [h for h in hits if h not in chosen]
    return chosen


# --------------------------------------------------------------------------- error per node
@dataclass
class NodeError:
    node: str  # the node to keep in FP32 for this error (the weighted op of its group, if any)
    op_type: str
    output_error: float  # relative L2 error of the group's output, quantized vs FP32
    added_error: float  # output error minus the largest error of the group's inputs
    group: list[str]  # FP32 nodes between the compared tensors (fused by the quantizer, e.g. Gemm+Relu)

    def to_dict(self) -> dict:
        return {"node": self.node, "op_type": self.op_type, "output_error": self.output_error,
                "added_error": self.added_error, "group": list(self.group)}


WEIGHTED_OPS = ("Gemm", "MatMul", "Conv", "ConvTranspose", "Attention", "LSTM", "GRU", "Gather",
                "EmbedLayerNormalization")


def node_errors(fp32_path: Path, int8_path: Path, feeds: dict[str, Any], work: Path,
                allowed: set[str] | None = None) -> list[NodeError]:
    """The added error of every group of FP32 nodes, largest first (see the module docstring).
    A tensor the quantized graph no longer has (the quantizer fused Gemm+Relu into one node)
    joins its producer to its consumer's group."""
    import numpy as np
    import onnx

    fp32 = onnx.shape_inference.infer_shapes(onnx.load(str(fp32_path)))
    int8 = onnx.load(str(int8_path))
    produced = {o for n in int8.graph.node for o in n.output}
    floats = {vi.name for vi in list(fp32.graph.value_info) + list(fp32.graph.output)
              if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    tensors = sorted(t for n in fp32.graph.node for t in n.output if t in floats and t in produced)
    if not tensors:
        return []
    # the value consumers read: after the tensor's Quantize/DequantizeLinear pair when it has one
    # (a fused Gemm+Relu leaves the Relu to that pair's zero point)
    seen = {t: f"{t}_DequantizeLinear_Output" if f"{t}_DequantizeLinear_Output" in produced else t for t in tensors}
    values = []
    for model, name, names in ((fp32, "fp32", tensors), (int8, "int8", [seen[t] for t in tensors])):
        existing = {o.name for o in model.graph.output}
        for t in names:
            if t not in existing:
                model.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
        path = work / f"errors-{name}.onnx"
        onnx.save(model, str(path))
        values.append(_run_named(path, names, feeds))
    ref, got = values
    rel = {}
    for t in tensors:
        a, b = ref[t].astype(np.float64), got[seen[t]].astype(np.float64)
        if a.shape == b.shape:
            rel[t] = float(np.linalg.norm(b - a) / max(float(np.linalg.norm(a)), 1e-12))
    producer = {o: n for n in fp32.graph.node for o in n.output}

    def upstream(node, group: list) -> float:
        """The largest error entering `node`, walking through producers whose outputs are not compared."""
        group.append(node)
        worst_in = 0.0
        for i in node.input:
            if i in rel:
                worst_in = max(worst_in, rel[i])
            elif i in producer and producer[i] not in group:
                worst_in = max(worst_in, upstream(producer[i], group))
        return worst_in

    out = []
    for node in fp32.graph.node:
        outs = [rel[o] for o in node.output if o in rel]
        if not outs:
            continue
        group: list = []
        entering = upstream(node, group)
        members = [n for n in group if allowed is None or n.op_type in allowed]
        rep = next((n for n in members if n.op_type in WEIGHTED_OPS), members[0] if members else node)
        out.append(NodeError(rep.name, rep.op_type, max(outs), max(outs) - entering, [n.name for n in group]))
    out.sort(key=lambda e: -e.added_error)
    return out


def _run_named(path: Path, names: list[str], feeds: dict[str, Any]) -> dict[str, Any]:
    from onnxtax.core.providers import open_session

    # no graph optimisation: fusions would hide the intermediate tensors compared here
    session = open_session(path, opt_level="disable", record_placement=False)
    outputs = session.run(names, feeds)
    return dict(zip(names, outputs))


def file_size(path: Path) -> int:
    """The model file plus any external data files beside it that it references."""
    import onnx

    size = path.stat().st_size
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - the size of what is there is still right
        return size
    seen = set()
    for init in model.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location" and entry.value not in seen:
                seen.add(entry.value)
                extra = path.parent / entry.value
                if extra.is_file():
                    size += extra.stat().st_size
    return size
