"""What each ONNX Runtime release loads: the highest ai.onnx opset, ai.onnx.ml opset and
IR version, per release series, without installing anything.

onnxruntime has no API to ask a release for its limits (onnxruntime#14932), and it refuses
a model above any of them at load time: "Unsupported model IR version: 10, max supported IR
version: 9" (model.cc) or an opset "is under development" / not supported
(ValidateOpsetForDomain) - even when every op in the graph is an old one. So a model
stamped with a higher opset or IR version than the deployed release fails, whatever it uses.

Rows come from ORT's published compatibility table (docs: reference/compatibility) and
from measurements on this machine (`measure_limits`: the same one-node Relu model stamped
with each IR version and each opset, loaded and run in a virtualenv holding only that
release). `source` says which: "measured" rows were loaded here, release by release.

`onnxtax runtimes --limits --ort V` measures any release and prints its row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from onnxtax.core.errors import OnnxtaxError

MEASURED_ON = "2026-11-28, Python 3.11, linux x86_64"


@dataclass(frozen=True)
class OrtLimits:
    """One release series (1.16.x): what it loads, and the patch release used to verify it."""

    series: str
    latest: str  # the newest patch release of the series: what `--target-ort 1.16` installs to verify
    max_opset: int
    max_ml_opset: int | None
    max_ir: int
    source: str  # "measured" (loaded here, see MEASURED_ON) or "published" (ORT's table only)

    def to_dict(self) -> dict:
        return {"series": self.series, "latest": self.latest, "max_opset": self.max_opset,
                "max_ml_opset": self.max_ml_opset, "max_ir_version": self.max_ir, "source": self.source}


# series, newest patch (what --target-ort SERIES installs to verify), ai.onnx, ai.onnx.ml, IR, source.
# Published (ORT docs, reference/compatibility): 1.14 opset 18 / IR 8; 1.15-1.16 opset 19 / IR 9;
# 1.17 opset 20 / IR 9; 1.18-1.20 opset 21 / IR 10. "measured": loaded here with the probe models of
# probe_models (IR 3..16, opset 7..30, ml 1..6) in a virtualenv holding only release `latest`
# (MEASURED_ON); they agree with every published row they overlap.
LIMITS: tuple[OrtLimits, ...] = (
    OrtLimits("1.14", "1.14.1", 18, 3, 8, "published"),
    OrtLimits("1.15", "1.15.1", 19, 3, 9, "measured"),
    OrtLimits("1.16", "1.16.3", 19, 3, 9, "measured"),
    OrtLimits("1.17", "1.17.3", 20, 4, 9, "measured"),
    OrtLimits("1.18", "1.18.1", 21, 5, 10, "measured"),
    OrtLimits("1.19", "1.19.2", 21, 5, 10, "measured"),
    OrtLimits("1.20", "1.20.1", 21, 5, 10, "measured"),
    OrtLimits("1.21", "1.21.1", 22, 5, 10, "measured"),
    OrtLimits("1.22", "1.22.1", 22, 5, 10, "measured"),  # measured on 1.22.0
    OrtLimits("1.23", "1.23.2", 23, 5, 11, "measured"),
    OrtLimits("1.24", "1.24.4", 25, 5, 13, "measured"),
    OrtLimits("1.25", "1.25.1", 26, 5, 13, "measured"),
    OrtLimits("1.26", "1.26.0", 26, 5, 13, "measured"),
    OrtLimits("1.27", "1.27.0", 26, 5, 13, "measured"),
    OrtLimits("1.28", "1.28.0", 26, 5, 13, "measured"),
    OrtLimits("1.29", "1.29.0", 26, 5, 13, "measured"),
    OrtLimits("1.30", "1.30.0", 26, 5, 13, "measured"),
    OrtLimits("1.31", "1.31.1", 26, 5, 13, "measured"),
    OrtLimits("1.32", "1.32.0", 28, 5, 14, "measured"),
)

_SERIES = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?$")


def parse_target(text: str) -> tuple[str, str | None]:
    """'1.16' -> ('1.16', None); '1.16.3' -> ('1.16', '1.16.3')."""
    m = _SERIES.match(text.strip())
    if not m:
        raise OnnxtaxError(f"--target-ort '{text}' is not an onnxruntime version",
                           "give a release series or release, e.g. --target-ort 1.16 or 1.16.3")
    series = f"{int(m.group(1))}.{int(m.group(2))}"
    return series, (f"{series}.{int(m.group(3))}" if m.group(3) is not None else None)


def limits_for(text: str) -> OrtLimits:
    """The limits of a release or series; an unknown one is a usage error naming the known range."""
    series, exact = parse_target(text)
    for row in LIMITS:
        if row.series == series:
            if exact is not None and exact != row.latest:
                return OrtLimits(row.series, exact, row.max_opset, row.max_ml_opset, row.max_ir, row.source)
            return row
    known = f"{LIMITS[0].series} to {LIMITS[-1].series}"
    raise OnnxtaxError(f"no opset/IR limits known for onnxruntime {series} (the table covers {known})",
                       f"measure them: onnxtax runtimes --limits --ort {exact or series + '.0'} (or target a "
                       "listed series)")


# ------------------------------------------------------------------------------ checks on a model


def min_ir_for_opset(opset: int) -> int:
    """The lowest IR version whose ONNX release defines this ai.onnx opset (onnx.helper's table):
    opset 15-18 -> IR 8, 19-20 -> IR 9, 21-22 -> IR 10, ..."""
    from onnx import helper

    return min(row[1] for row in helper.VERSION_TABLE if row[2] >= opset)


def min_ir_for_model(model) -> tuple[int, str]:
    """The lowest IR version the model can be stamped with, and what sets it. Beyond the opset:
    model-local functions need IR 8, float8 types IR 9, 4-bit integers IR 10, float4 IR 11."""
    from onnx import TensorProto

    opset = next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), 1)
    need, why = min_ir_for_opset(opset), f"opset {opset}"
    if len(model.functions) and need < 8:
        need, why = 8, "model-local functions"
    features = [(9, "float8", ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ")),
                (10, "4-bit integers", ("INT4", "UINT4")), (11, "float4", ("FLOAT4E2M1",))]
    used = _elem_types(model)
    for ir, label, names in features:
        codes = {getattr(TensorProto, n) for n in names if hasattr(TensorProto, n)}
        if used & codes and need < ir:
            need, why = ir, f"{label} tensors"
    return need, why


def _elem_types(model) -> set[int]:
    types: set[int] = set()
    graphs = [model.graph] + [f for f in model.functions]
    while graphs:
        g = graphs.pop()
        for t in getattr(g, "initializer", []):
            types.add(t.data_type)
        for vi in list(getattr(g, "input", [])) + list(getattr(g, "output", [])) + list(getattr(g, "value_info", [])):
            if not isinstance(vi, str) and vi.type.HasField("tensor_type"):
                types.add(vi.type.tensor_type.elem_type)
        for node in g.node:
            for attr in node.attribute:
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)
                if attr.HasField("t"):
                    types.add(attr.t.data_type)
                if attr.name == "to":
                    types.add(attr.i)
    return types


@dataclass
class TargetProblem:
    """One reason the target release refuses the model: what, where and the fix."""

    kind: str  # "ir" | "opset" | "ml-opset" | "op"
    message: str
    hint: str
    op_type: str | None = None
    nodes: tuple[str, ...] = ()
    since_version: int | None = None


def target_problems(model, limits: OrtLimits) -> list[TargetProblem]:
    """Everything that makes `limits`' release refuse to load `model` (the stamped IR version and
    opsets, and the ops that exist only in a later opset than it has), in the order to fix them."""
    import onnx.defs

    name = f"onnxruntime {limits.series}"
    out: list[TargetProblem] = []
    imports = {(i.domain or ""): i.version for i in model.opset_import}
    opset = imports.get("", imports.get("ai.onnx"))
    min_ir, why = min_ir_for_model(model)
    if model.ir_version > limits.max_ir:
        if min_ir <= limits.max_ir:
            hint = (f"export with --target-ort {limits.series} (writes IR {min_ir}, the lowest {why} allows), or set "
                    f"model.ir_version = {min_ir} with onnx")
        else:
            hint = f"{why} needs IR {min_ir}: export at a lower --opset with --target-ort {limits.series}"
        out.append(TargetProblem("ir", f"IR version {model.ir_version} is above what {name} loads (IR <= "
                                 f"{limits.max_ir}): it refuses the model ('Unsupported model IR version')", hint))
    if opset is not None and opset > limits.max_opset:
        out.append(TargetProblem("opset", f"ai.onnx opset {opset} is above what {name} loads (opset <= "
                                 f"{limits.max_opset}): it refuses the model whatever ops it uses",
                                 f"export with --target-ort {limits.series} (converts to opset {limits.max_opset}), "
                                 f"or --opset {limits.max_opset}"))
        by_op: dict[str, list[str]] = {}
        for node in _default_domain_nodes(model):
            by_op.setdefault(node.op_type, []).append(node.name or node.op_type)
        for op, nodes in sorted(by_op.items()):
            try:
                since = onnx.defs.get_schema(op, opset, "").since_version
            except Exception:  # noqa: BLE001 - an op onnx does not know: custom-op rules report it
                continue
            try:
                onnx.defs.get_schema(op, limits.max_opset, "")
                continue  # an older version of the op exists: the opset conversion handles it
            except Exception:  # noqa: BLE001
                pass
            out.append(TargetProblem("op", f"{op} exists only since opset {since}; {name} implements opsets up to "
                                     f"{limits.max_opset} and has no {op} ({len(nodes)} node(s): "
                                     f"{', '.join(nodes[:5])})",
                                     f"rewrite {op} with ops of opset {limits.max_opset} in the model (e.g. its "
                                     f"decomposition), or deploy onnxruntime newer than {limits.series}",
                                     op_type=op, nodes=tuple(nodes), since_version=since))
    ml = imports.get("ai.onnx.ml")
    if ml is not None and limits.max_ml_opset is not None and ml > limits.max_ml_opset:
        out.append(TargetProblem("ml-opset", f"ai.onnx.ml opset {ml} is above what {name} loads "
                                 f"(<= {limits.max_ml_opset})",
                                 f"convert the ML ops to ai.onnx.ml opset {limits.max_ml_opset} (the converter's "
                                 "target_opset option), or deploy a newer onnxruntime"))
    return out


def _default_domain_nodes(model):
    graphs = [model.graph] + list(model.functions)
    while graphs:
        g = graphs.pop()
        for node in g.node:
            if node.domain in ("", "ai.onnx"):
                yield node
            for attr in node.attribute:
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)


# ------------------------------------------------------------------------------ measuring a release


def probe_models(folder: Path) -> list[dict]:
    """The probe files: one Relu node stamped with IR 3..16 (at opset 13), opset 7..30 (at IR 7),
    and ai.onnx.ml 1..6 (beside opset 13). A release that refuses a stamp refuses any model with it."""
    import onnx
    from onnx import TensorProto, helper

    def relu(ir: int, opsets: dict[str, int]):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
        model.ir_version = ir
        return model

    probes = []
    cases = ([("ir", v, relu(v, {"": 13})) for v in range(3, 17)] +
             [("opset", v, relu(7, {"": v})) for v in range(7, 31)] +
             [("ml", v, relu(7, {"": 13, "ai.onnx.ml": v})) for v in range(1, 7)])
    for kind, v, model in cases:
        path = folder / f"{kind}{v}.onnx"
        onnx.save(model, str(path))
        probes.append({"id": f"{kind}:{v}", "path": str(path)})
    return probes


def limits_from_probes(version: str, results: list[dict]) -> OrtLimits:
    """The highest stamp of each kind that loaded (and ran)."""
    best: dict[str, int | None] = {"ir": None, "opset": None, "ml": None}
    for r in results:
        kind, v = r["id"].split(":")
        if r["loads"] and (best[kind] is None or int(v) > best[kind]):  # type: ignore[operator]
            best[kind] = int(v)
    series = ".".join(version.split(".")[:2])
    return OrtLimits(series, version, best["opset"] or 0, best["ml"], best["ir"] or 0, "measured")


# ------------------------------------------------------------------------------ export for a target


def fit_model_to_target(model, limits: OrtLimits) -> str:
    """Stamp `model` (already at an opset the target has) with the lowest IR version its opset and
    features allow, which the target loads; what is left that the target refuses is a CheckFailed
    naming it. Returns the check's detail line."""
    from onnxtax.core.errors import CheckFailed

    before = model.ir_version
    need, why = min_ir_for_model(model)
    if need > limits.max_ir:
        raise CheckFailed(f"{why} needs IR version {need}; onnxruntime {limits.series} loads IR <= {limits.max_ir}",
                          f"export at a lower --opset (onnxruntime {limits.series} loads opset <= {limits.max_opset})")
    model.ir_version = need
    left = target_problems(model, limits)
    if left:
        raise CheckFailed(left[0].message, left[0].hint)
    return (f"IR {need} (the lowest {why} allows; the exporter wrote {before}); onnxruntime {limits.series} loads "
            f"IR <= {limits.max_ir}, opset <= {limits.max_opset}")
