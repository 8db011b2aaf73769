"""Execution providers: short names, what this host really has, sessions, and where
ORT really ran each node.

`InferenceSession.get_providers()` lists what was registered, not what ran: OpenVINO
asked for a device the host lacks still appears there while every node runs on CPU.
The placement here comes from ORT's own graph assignment
(`session.record_ep_graph_assignment_info`), the same record for parity, lint and bench.

Everything else onnxtax asks of ONNX Runtime lives here too: session options, what the
installed runtime loads (one-node probe models: its IR and opset limits, a single op),
one reading of its error messages, and placement read in a child process for providers
that can abort the process.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from onnxtax.core.child import ChildResult, run_in_child
from onnxtax.core.defaults import OPT_LEVEL, ORT_OPT_LEVELS
from onnxtax.core.errors import CheckFailed, ProviderError

SHORT_NAMES: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "nvtensorrtrtx": "NvTensorRTRTXExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "ov": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "directml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "acl": "ACLExecutionProvider",
    "armnn": "ArmNNExecutionProvider",
    "cann": "CANNExecutionProvider",
    "dnnl": "DnnlExecutionProvider",
    "vitisai": "VitisAIExecutionProvider",
    "webgpu": "WebGpuExecutionProvider",
    "azure": "AzureExecutionProvider",
}
# Registered by ORT but runs no graph nodes itself.
NOT_COMPUTE = {"AzureExecutionProvider": "remote endpoint invoker: runs no graph nodes locally"}

OPT_LEVELS = tuple(ORT_OPT_LEVELS)

_ORT_PACKAGES = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml",
                 "onnxruntime-qnn", "onnxruntime-training", "ort-nightly", "onnxruntime-silicon")


@dataclass(frozen=True)
class ProviderRequest:
    """A provider as asked for on the command line: `openvino:device_type=CPU`."""

    name: str  # full EP name
    options: dict[str, str] = field(default_factory=dict)

    @property
    def short(self) -> str:
        for short, full in SHORT_NAMES.items():
            if full == self.name:
                return short
        return self.name

    @property
    def label(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.short}:{opts}" if opts else self.short

    def to_dict(self) -> dict:
        return {"name": self.name, "short": self.short, "options": dict(self.options)}


def full_provider_name(text: str) -> str:
    key = text.strip()
    if key.lower() in SHORT_NAMES:
        return SHORT_NAMES[key.lower()]
    for full in set(SHORT_NAMES.values()):
        if key.lower() == full.lower() or key.lower() + "executionprovider" == full.lower():
            return full
    if key.endswith("ExecutionProvider"):
        return key  # an EP we have no short name for; availability decides
    import difflib

    close = difflib.get_close_matches(key.lower(), list(SHORT_NAMES), n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"short names: {', '.join(sorted(SHORT_NAMES))}"
    raise ProviderError(f"unknown execution provider '{text}'", hint)


def parse_provider(text: str) -> ProviderRequest:
    """`cpu`, `CUDAExecutionProvider`, `openvino:device_type=CPU,precision=FP32`."""
    name, sep, opts_text = text.partition(":")
    options: dict[str, str] = {}
    if sep and opts_text.strip():
        for part in opts_text.split(","):
            key, eq, value = part.partition("=")
            if not eq or not key.strip():
                raise ProviderError(f"provider option '{part}' in '{text}' needs KEY=VALUE",
                                    "e.g. --provider openvino:device_type=CPU")
            options[key.strip()] = value.strip()
    return ProviderRequest(full_provider_name(name), options)


@lru_cache(maxsize=1)
def available_providers() -> tuple[str, ...]:
    import onnxruntime as ort

    return tuple(ort.get_available_providers())


def compute_providers() -> list[str]:
    return [p for p in available_providers() if p not in NOT_COMPUTE]


def ort_package() -> tuple[str, str]:
    """(distribution name, version) of the installed onnxruntime build."""
    from importlib import metadata

    for dist in _ORT_PACKAGES:
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    import onnxruntime as ort

    return "onnxruntime", ort.__version__


def resolve_providers(requested: Sequence[str | ProviderRequest] | None, *, skip_unavailable: bool = False
                      ) -> tuple[list[ProviderRequest], list[ProviderRequest]]:
    """(usable, skipped). Nothing asked: every compute provider on this host.
    An unavailable one is an error listing what is available, or skipped if allowed."""
    if not requested:
        return [ProviderRequest(p) for p in compute_providers()], []
    usable, skipped = [], []
    for item in requested:
        req = item if isinstance(item, ProviderRequest) else parse_provider(item)
        if req.name in NOT_COMPUTE:
            raise ProviderError(f"{req.name} is not a compute provider ({NOT_COMPUTE[req.name]})",
                                f"available compute providers: {', '.join(compute_providers())}")
        if req.name in available_providers():
            check_provider_options(req)
            if req not in usable:
                usable.append(req)
        elif skip_unavailable:
            skipped.append(req)
        else:
            dist, ver = ort_package()
            raise ProviderError(
                f"execution provider {req.name} is not available on this host ({dist} {ver})",
                f"available: {', '.join(compute_providers())}; use --skip-unavailable to skip it",
            )
    return usable, skipped


def check_provider_options(request: ProviderRequest) -> None:
    """ORT drops provider options it does not know without a word (`cpu:foo=1` ran as plain
    CPU), and registers only CPU when a provider rejects its options. A probe session shows
    what ORT applied: an option it did not take is a usage error, naming the valid keys
    when ORT lists them (CUDA and TensorRT list theirs; OpenVINO lists none, and checks
    its own keys)."""
    if request.options:
        _check_options(request.name, tuple(request.options.items()))


@lru_cache(maxsize=None)
def _check_options(name: str, items: tuple[tuple[str, str], ...]) -> None:
    import contextlib
    import io

    import onnxruntime as ort

    requested = dict(items)
    label = ",".join(f"{k}={v}" for k, v in items)
    fix = "check the option names in the execution provider's documentation"
    printed = io.StringIO()  # ORT prints why it fell back ("EP Error ... Invalid ... option")
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            session = ort.InferenceSession(probe_model(ir_version=8).SerializeToString(),
                                           session_options(record_placement=False),
                                           providers=[name], provider_options=[requested])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own pybind exception types
        raise ProviderError(f"{name} refuses the options {label}: {ort_error_summary(exc)[0]}", fix) from exc
    if name not in session.get_providers():
        m = re.search(r"EP Error (.*?)\s+when using", printed.getvalue(), re.S)
        why = re.sub(r"^.*[)]\s+", "", m.group(1).strip(), flags=re.S) if m else ""  # no C++ location
        if "option" not in why.lower():
            return  # not the options (e.g. OpenVINO's device_type=GPU without a GPU): the stage shows the fallback
        raise ProviderError(f"{name} did not start with the options {label}; ORT fell back to "
                            f"{', '.join(session.get_providers())}: {why}", fix)
    applied = session.get_provider_options().get(name) or {}
    if not applied and name != "CPUExecutionProvider":
        return  # this provider does not list its options: nothing to compare with
    unknown = [k for k in requested if k not in applied]
    if unknown:
        short = ProviderRequest(name).short
        valid = f"valid keys: {', '.join(sorted(applied))}" if applied else f"{short} takes no provider options"
        raise ProviderError(f"{name} has no option {', '.join(repr(k) for k in unknown)}: ORT ignored "
                            f"{'it' if len(unknown) == 1 else 'them'} (it applied {dict(applied) or '{}'})",
                            f"{valid}; e.g. --provider {short}" + (f":{next(iter(sorted(applied)))}=..." if applied
                                                                   else ""))


def session_options(*, opt_level: str = OPT_LEVEL, threads: int | None = None, record_placement: bool = True,
                    disable_cpu_fallback: bool = False, profile_prefix: str | None = None, quiet: bool = True):
    import onnxruntime as ort

    if opt_level not in OPT_LEVELS:
        raise ProviderError(f"unknown optimisation level '{opt_level}'", f"use one of: {', '.join(OPT_LEVELS)}")
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_OPT_LEVELS[opt_level])
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if record_placement:
        so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    if disable_cpu_fallback:
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    if quiet:
        # ORT logs run errors itself before raising them; onnxtax reports them once, as a finding
        so.log_severity_level = 4
        ort.set_default_logger_severity(4)
    return so


_ORT_STATUS_PREFIX = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*")
# "/onnxruntime_src/.../model.cc:256 onnxruntime::Model::Model(...) [const] " before the message itself
_CPP_LOCATION = re.compile(r"/\S+\.(?:cc|cpp|h|hpp):\d+\s+.*?\)(?: const)?\s+")
# the node an ORT message names, most specific first
_NODE_NAMED = tuple(re.compile(p) for p in (
    r'In Node, \("([^"]+)"', r"node with name '([^']+)'", r"[Nn]ode \(([^)]+)\)", r"Name:\s*'([^']+)'",
    r"node_name[=: ]+'?([\w./:-]+)", r"Node:\s*'?([\w./:-]+)"))


def ort_error_summary(error: BaseException | str) -> tuple[str, str | None]:
    """(first meaningful line of an ORT error, the node it names if any): the status
    prefix and the C++ source location are dropped, the node is searched in the whole text."""
    text = (error if isinstance(error, str) else str(error)).strip()
    first = text.splitlines()[0] if text else (type(error).__name__ if not isinstance(error, str) else "")
    first = _CPP_LOCATION.sub("", _ORT_STATUS_PREFIX.sub("", first), count=1)
    node = None
    for pattern in _NODE_NAMED:
        m = pattern.search(text)
        if m:
            node = m.group(1)
            break
    return first.strip()[:400], node


def open_session(model_path: str | Path, request: ProviderRequest | None = None, *, opt_level: str = OPT_LEVEL,
                 threads: int | None = None, record_placement: bool = True, disable_cpu_fallback: bool = False,
                 profile_prefix: str | None = None, model_bytes: bytes | None = None,
                 shared_initializers: tuple[list[str], list[Any]] | None = None, prepack: bool = True):
    """One InferenceSession on exactly this provider (ORT adds CPU as its fallback
    unless `disable_cpu_fallback`). A load failure is a CheckFailed naming the provider.

    `model_bytes` (a proto read from `model_path`, see onnxtax.core.sharing) is loaded instead of the
    file, its external data still found beside `model_path`; `shared_initializers` (names,
    OrtValues) replace initializers without reading them, kept by reference, with pre-packing
    off so ORT keeps no re-laid-out second copy (`prepack=False` turns it off anyway: for
    sessions that only report, not serve)."""
    import onnxruntime as ort

    request = request or ProviderRequest("CPUExecutionProvider")
    so = session_options(opt_level=opt_level, threads=threads, record_placement=record_placement,
                         disable_cpu_fallback=disable_cpu_fallback, profile_prefix=profile_prefix)
    if model_bytes is not None:
        so.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                    str(Path(model_path).resolve().parent))
    if not prepack or (shared_initializers is not None and shared_initializers[0]):
        so.add_session_config_entry("session.disable_prepacking", "1")
    if shared_initializers is not None and shared_initializers[0]:
        for name, value in zip(*shared_initializers):
            so.add_initializer(name, value)
    try:
        return ort.InferenceSession(model_bytes if model_bytes is not None else str(model_path), so,
                                    providers=[request.name], provider_options=[dict(request.options)])
    except Exception as exc:  # ORT raises its own pybind exception types
        line, node = ort_error_summary(exc)
        where = f" (node {node})" if node else ""
        raise CheckFailed(f"ONNX Runtime could not load {Path(model_path).name} on {request.name}: {line}{where}",
                          "run `onnxtax lint-ops` on the model to see which ops or versions the runtime rejects") from exc


@dataclass
class Placement:
    """Which provider ORT assigned each node to, after its graph optimisations."""

    provider: str
    total_nodes: int = 0
    on_provider: int = 0
    by_provider: dict[str, int] = field(default_factory=dict)
    fallback_op_types: dict[str, int] = field(default_factory=dict)
    fallback_nodes: list[dict[str, str]] = field(default_factory=list)
    method: str = "ort-graph-assignment"  # or "unavailable" when ORT cannot tell

    @property
    def fallback_count(self) -> int:
        return self.total_nodes - self.on_provider

    @property
    def fell_back(self) -> bool:
        return self.fallback_count > 0

    @classmethod
    def from_dict(cls, data: dict) -> "Placement":
        return cls(data["provider"], total_nodes=data["total_nodes"], on_provider=data["on_provider"],
                   by_provider=dict(data["by_provider"]), fallback_op_types=dict(data["fallback_op_types"]),
                   fallback_nodes=list(data["fallback_nodes"]), method=data["method"])

    def to_dict(self) -> dict:
        return {"provider": self.provider, "method": self.method, "total_nodes": self.total_nodes,
                "on_provider": self.on_provider, "fallback": self.fallback_count,
                "by_provider": dict(self.by_provider), "fallback_op_types": dict(self.fallback_op_types),
                "fallback_nodes": list(self.fallback_nodes)}


def placement_of(session: Any, provider: str) -> Placement:
    """Read ORT's record of where each node went (needs `record_placement=True`)."""
    result = Placement(provider)
    getter = getattr(session, "get_provider_graph_assignment_info", None)
    if getter is None:
        result.method = "unavailable"
        return result
    try:
        subgraphs = getter()
    except Exception:  # noqa: BLE001 - older ORT builds without the record
        result.method = "unavailable"
        return result
    per_ep: Counter[str] = Counter()
    ops: Counter[str] = Counter()
    for sg in subgraphs:
        for node in sg.get_nodes():
            per_ep[sg.ep_name] += 1
            if sg.ep_name != provider:
                op = f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
                ops[op] += 1
                result.fallback_nodes.append({"name": node.name, "op_type": op, "provider": sg.ep_name})
    result.total_nodes = sum(per_ep.values())
    result.on_provider = per_ep.get(provider, 0)
    result.by_provider = dict(per_ep)
    result.fallback_op_types = dict(ops.most_common())
    return result


# Loading a large model on an accelerator provider can take minutes; a hang must still end.
PLACEMENT_TIMEOUT_S = 600


def isolated_placement(model_path: str | Path, request: ProviderRequest, *,
                       timeout: float = PLACEMENT_TIMEOUT_S) -> ChildResult:
    """ORT's placement on `request`, read in a child process: a provider that aborts on the
    model (a C++ `terminate`) or hangs must not take the caller down with it.

    The result's `value` is `Placement.to_dict()` when ok; status "error" is the provider
    refusing the model (message and hint of the CheckFailed); "crashed" and "timeout" say
    how the child ended."""
    return run_in_child("onnxtax.core.providers:placement_in_child",
                        {"model": str(model_path), "provider": request.name, "options": dict(request.options)},
                        timeout=timeout)


def placement_in_child(request: dict) -> dict:
    """The child's side of isolated_placement."""
    req = ProviderRequest(request["provider"], dict(request["options"]))
    return placement_of(open_session(request["model"], req), req.name).to_dict()


def probe_model(node: Any = None, *, inputs: list | None = None, outputs: list | None = None,
                opsets: dict[str, int] | None = None, ir_version: int):
    """A one-node ModelProto for asking the installed runtime what it loads (an IR version,
    an opset, one op with its input types). Default node: float Identity x -> y."""
    import onnx
    from onnx import helper

    if node is None:
        node = helper.make_node("Identity", ["x"], ["y"])
        inputs = [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])]
        outputs = [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]
    graph = helper.make_graph([node], "probe", list(inputs or []), list(outputs or []))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(domain, version)
                                                    for domain, version in (opsets or {"": 13}).items()])
    model.ir_version = ir_version
    return model


def load_error(model: Any, weights_dir: str | Path | None = None) -> str | None:
    """None if the installed ORT creates a CPU session for `model` (a path or a ModelProto),
    else its error text. No graph optimisation: the question is what it accepts, not speed.
    A ModelProto's external data (also the weight references of onnxtax.core.skeleton.read_skeleton)
    is read from `weights_dir`. No pre-packing: a load check keeps no re-laid-out weight copy."""
    import onnxruntime as ort

    source = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
    so = session_options(opt_level="disable", record_placement=False)
    so.add_session_config_entry("session.disable_prepacking", "1")
    if weights_dir is not None:
        so.add_session_config_entry("session.model_external_initializers_file_folder_path", str(weights_dir))
    try:
        ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
        return None
    except Exception as exc:  # noqa: BLE001 - ORT raises pybind exception types
        return str(exc).strip() or type(exc).__name__


def _limit_in_refusal(model: Any, pattern: str) -> int | None:
    error = load_error(model)
    m = re.search(pattern, error or "")
    return int(m.group(1)) if m else None


@lru_cache(maxsize=1)
def ort_max_ir_version() -> int | None:
    """The highest model IR version the installed runtime loads, asked of the runtime itself."""
    return _limit_in_refusal(probe_model(ir_version=1000), r"max supported IR version: (\d+)")


@lru_cache(maxsize=1)
def ort_max_opset() -> int | None:
    """The highest ai.onnx opset the installed runtime officially supports."""
    return _limit_in_refusal(probe_model(opsets={"": 1000}, ir_version=8),
                             r"support for domain ai\.onnx is till opset (\d+)")


@dataclass
class ProviderInfo:
    name: str
    short: str
    compute: bool
    note: str = ""


@dataclass
class HostProviders:
    package: str
    version: str
    providers: list[ProviderInfo]
    max_ir_version: int | None
    max_opset: int | None

    def to_dict(self) -> dict:
        return {"package": self.package, "version": self.version,
                "max_ir_version": self.max_ir_version, "max_opset": self.max_opset,
                "providers": [p.__dict__ for p in self.providers]}


def host_providers() -> HostProviders:
    dist, ver = ort_package()
    infos = []
    for name in available_providers():
        short = ProviderRequest(name).short
        infos.append(ProviderInfo(name, short, name not in NOT_COMPUTE, NOT_COMPUTE.get(name, "")))
    return HostProviders(dist, ver, infos, ort_max_ir_version(), ort_max_opset())
