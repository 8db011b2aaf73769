"""`onnxtax.toml` (or `[tool.onnxtax]` in pyproject.toml): the models `onnxtax ci` gates.

Found from the current directory upward (the first folder holding an `onnxtax.toml`,
or a `pyproject.toml` with a `[tool.onnxtax]` table); `--config PATH` overrides.
Everything is validated before any model is exported: an unknown key or a wrong type
is a ConfigError (exit 2) naming the file, the line, the key path and the closest
known key. Relative paths (spec files, outputs, data files, reports) resolve against
the config file's folder, so the same file works from any working directory.

Layout (every key optional unless marked):

    opset = 18                      # defaults for every model
    exporter = "dynamo"             # or "torchscript"
    external_data = "auto"          # "auto" | "always" | "never"
    output_dir = "build/onnx"       # a model without `output` writes OUTPUT_DIR/NAME.onnx
    reports = "onnxtax-reports"     # where `onnxtax ci` writes its reports
    fail_fast = false               # stop at the first failing model

    [parity]                        # defaults for every model's parity stage
    samples = 3                     # random samples per shape
    seed = 0
    rtol = 1e-4
    atol = 1e-5
    providers = ["cpu"]             # default: every compute provider on the host
    skip_unavailable = false        # true: a provider this host lacks is reported, not an error
    fail_on_fallback = false        # true: a node ORT moved to another provider fails the check
    opt_level = "all"               # "disable" | "basic" | "extended" | "all"
    threads = 1
    localize = true                 # a failure is localised (module, node, source line per provider)
    localize_budget_s = 120         # seconds the localisation may take per model

    [lint]                          # defaults for every model's lint-ops stage
    target_opset = 18               # the deployment runtime's opset / IR limits
    target_ir = 10
    allow = ["float64"]             # lint rules ("RULE" or "RULE:NODE") reported but not failing
    fail_on = "error"               # "error" | "warning" | "info"
    source = true                   # also lint the PyTorch code (traces the model once)

    target_ort = "1.16"             # the onnxruntime release the files must load in (export and lint-ops)

    [runtimes]                      # present: every model runs on these onnxruntime releases too (off otherwise)
    ort = ["1.16.3", "1.18.1"]      # required: exact releases, a cached virtualenv each
    providers = ["cpu"]
    cache_dir = ".cache/runtimes"   # default: $ONNXTAX_RUNTIMES_DIR, else ~/.cache/onnxtax/runtimes
    offline = false                 # true: never build a virtualenv (a release not cached is an error)

    [bench]                         # present: every model is benchmarked too (off otherwise)

    [sign]                          # present: after every gate of a model passed, sign its artifacts (and INT8
    key = "keys/ci.pem"             #   build) with this PEM EC private key (OpenSSF model signing; docs/sign.md)

    [verify]                        # the verify stage's signature check
    key = "keys/ci.pub"             # public key (default: the public half of [sign] key)
    require_signature = false       # true: no model passes unless its artifact ends signed by that key
                                    #   (a reused artifact must come signed; one exported here needs [sign])

    [models.fraud]                  # one table per model; the name is its report name
    spec = "fraud_detector.py:FraudDetector"    # required; or "hf:DIR[#task]" / "st:DIR" (docs/huggingface.md)
    inputs = ["x:batch,128"]                    # required (derived for hf:/st: specs), NAME:DIMS[:DTYPE]
    text = ["data/sentences.txt"]               # hf:/st: one sentence a line, tokenized: real inputs as `data`
    random_init = false                         # hf:/st: a folder without weights initialised from a seed
    trust_remote_code = false                   # hf:/st: run the Python code the folder ships
    output = "build/fraud.onnx"
    dims = { batch = 4 }                        # export sizes of dynamic axes
    output_names = ["prob"]
    ranges = { x = "-5:5" }                     # value domains for every stage: export's smoke run,
    data = ["data/fraud.npz"]                   #   parity and bench (parity's own are merged over them)

    [models.fraud.parity]           # merged over [parity], key by key
    dims = { batch = [1, 8, 33] }
    ranges = { x = "-5:5" }                     # or [-5, 5]; these reach export and bench too
    data = ["data/fraud.npz"]
    tolerances = { prob = { rtol = 1e-3, atol = 1e-5 } }
    allow_constant = ["mask_out"]               # outputs that may be the same for every input
    min_cosine = 0.999                          # similarity gate
    noise_factor = 64                           # atol/rtol >= k x the model's own noise (default 64, float16 12; 0: off)
    test_assumed = true                         # sizes just outside ranges torch.export assumed

    [models.fraud.bench]            # this model only; `bench = false` turns a global one off
    batch_sizes = [1, 8]
    data = ["data/rows.npz"]                    # time these rows (or `text` for hf:/st:) instead of random ones
    max_latency_ms = { p99 = 5.0 }
    min_speedup = 1.0

    [models.fraud.serve]            # this model only (or [serve] for every model): onnxtax serve-bench
    paths = ["eager", "ort", "node"]
    slo = "p99=20ms"
    max_batch = [1, 32]
    max_wait_ms = [2]
    min_qps_at_slo = { "*" = 2000, node = 5000 }  # or one number for every path
    max_p99_ms = { "ort@1000" = 5 }             # or one number: p99 at each path's load within the SLO
    cold_start_runs = 1                         # 1 in ci unless set (fresh processes cost seconds)

    [models.fraud.quantize]         # this model only: an INT8 build approved per segment
    eval = { ordinary = "data/ordinary.npz", tail = "data/tail.npz" }   # required
    budgets = { "agreement@0.5" = 0.97, tail = { "agreement@0.5" = 0.95 } }  # required
    mode = "static"                 # "dynamic" | "static" | "auto"
    calibration = ["data/calibration.npz"]
    output = "build/fraud.int8.onnx"            # default: OUTPUT with .int8.onnx
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from onnxtax.bench.options import BenchOptions
from onnxtax.ci.keys import (KEY_ALIASES, built, check_axes, check_latency_key, check_provider, derived_inputs,
                             domains, resolve_quantize, resolve_spec, signing_keys, stage_options, text_files)
from onnxtax.ci.schema import ROOT, ConfigText, suggest, validate
from onnxtax.core.errors import ConfigError, OnnxtaxError
from onnxtax.core.specs import parse_ranges
from onnxtax.export.options import ExportOptions
from onnxtax.lint.options import LintOptions
from onnxtax.parity.options import ParityOptions
from onnxtax.quantize.options import QuantizeOptions
from onnxtax.runtimes.options import RuntimesOptions
from onnxtax.serve.options import ServeOptions

CONFIG_NAME = "onnxtax.toml"
PYPROJECT = "pyproject.toml"
DEFAULT_REPORTS = "onnxtax-reports"
DEFAULT_OUTPUT_DIR = "build/onnx"
# File names `onnxtax ci` writes beside the per-model reports.
RESERVED_NAMES = ("host", "ci", "junit", "lint", "summary", "matrix")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --------------------------------------------------------------------------- what a model runs with
# Each stage's table builds that stage's options object (ExportOptions, LintOptions, ParityOptions,
# BenchOptions, QuantizeOptions, RuntimesOptions): the same objects the commands and the library
# build, with the same defaults and the same validation. A key of the file is the option's field
# of the same name, except where KEY_ALIASES renames it.
@dataclass
class ModelConfig:
    """One `[models.NAME]` table resolved: paths absolute, every stage's options built and validated."""

    name: str
    spec: str  # a file spec made absolute against the config folder
    inputs: list[str]
    output: Path
    export: ExportOptions = field(default_factory=ExportOptions)
    lint: LintOptions = field(default_factory=LintOptions)
    lint_source: bool = True  # also lint the PyTorch source (traces the model: seconds for big ones)
    parity: ParityOptions = field(default_factory=lambda: ParityOptions(localize=True))
    bench: BenchOptions | None = None
    quantize: QuantizeOptions | None = None
    quantize_output: Path | None = None
    runtimes: RuntimesOptions | None = None
    sign_key: Path | None = None  # [sign] key: sign after every gate passed
    verify_key: Path | None = None  # [verify] key, else None (the sign stage uses the public half of sign_key)
    require_signature: bool = False
    serve: ServeOptions | None = None

    @property
    def input_specs(self) -> list:
        from onnxtax.core.specs import parse_input_specs

        return parse_input_specs(self.inputs)

    @property
    def target_ort(self) -> str | None:
        return self.export.target_ort

    def to_dict(self) -> dict:
        from onnxtax.core.report import jsonable

        out: dict[str, Any] = {"name": self.name, "spec": self.spec, "inputs": list(self.inputs),
                               "output": str(self.output), "lint_source": self.lint_source,
                               "quantize_output": str(self.quantize_output) if self.quantize_output else None,
                               "sign_key": str(self.sign_key) if self.sign_key else None,
                               "verify_key": str(self.verify_key) if self.verify_key else None,
                               "require_signature": self.require_signature}
        for stage in ("export", "lint", "parity", "bench", "quantize", "runtimes", "serve"):
            value = getattr(self, stage)
            out[stage] = value.to_dict() if value is not None else None
        return jsonable(out)


@dataclass
class OnnxtaxConfig:
    path: Path  # the file read
    table: str  # "" for onnxtax.toml, "tool.onnxtax" for pyproject.toml
    models: dict[str, ModelConfig]
    reports: Path  # default reports folder (absolute)
    fail_fast: bool = False

    @property
    def root(self) -> Path:
        return self.path.parent

    def select(self, only: list[str] | tuple[str, ...] | None) -> list[ModelConfig]:
        """The models to run, in file order; unknown names are a ConfigError with a suggestion."""
        if not only:
            return list(self.models.values())
        chosen = []
        for name in only:
            if name not in self.models:
                raise ConfigError(f"--only {name}: no model '{name}' in {self.path}",
                                  suggest(name, list(self.models), "models defined"))
            if self.models[name] not in chosen:
                chosen.append(self.models[name])
        return [m for m in self.models.values() if m in chosen]

    def to_dict(self) -> dict:  # not a _Record: `table` "" is written null and models by name
        return {"path": str(self.path), "table": self.table or None, "reports": str(self.reports),
                "fail_fast": self.fail_fast, "models": {k: m.to_dict() for k, m in self.models.items()}}


# --------------------------------------------------------------------------- schema


# --------------------------------------------------------------------------- locating errors


# --------------------------------------------------------------------------- validation


# --------------------------------------------------------------------------- finding and loading
def find_config(start: str | Path | None = None) -> tuple[Path, str]:
    """(file, table) of the nearest config from `start` (default cwd) upward."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            return candidate, ""
        pyproject = folder / PYPROJECT
        if pyproject.is_file() and _has_tool_table(pyproject):
            return pyproject, "tool.onnxtax"
    raise ConfigError(f"no {CONFIG_NAME} (or pyproject.toml with [tool.onnxtax]) in {here} or any folder above",
                      f"write one (see examples/{CONFIG_NAME}) or pass --config PATH")


def _has_tool_table(pyproject: Path) -> bool:
    try:
        text = pyproject.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        # a broken pyproject that mentions our table is ours (load_config names the syntax
        # error); skipping it would silently run a config further up
        return re.search(r"^\s*\[\s*tool\s*\.\s*onnxtax\b|^\s*tool\s*\.\s*onnxtax\s*[.=]", text, re.M) is not None
    return isinstance(data.get("tool"), dict) and "onnxtax" in data["tool"]


def load_config(path: str | Path | None = None, *, start: str | Path | None = None) -> OnnxtaxConfig:
    """Read, validate and resolve a config. `path`: an onnxtax.toml or a pyproject.toml
    (its [tool.onnxtax] table); None: search from `start` (default cwd) upward."""
    if path is None:
        file, table = find_config(start)
    else:
        file = Path(path).expanduser().resolve()
        if file.is_dir():
            raise ConfigError(f"--config {path} is a folder", f"point at the {CONFIG_NAME} file inside it")
        if not file.is_file():
            raise ConfigError(f"config file {path} does not exist", f"pass the path of an {CONFIG_NAME}")
        table = "tool.onnxtax" if file.name == PYPROJECT else ""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {file}: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}", "fix the syntax at the line named") from exc
    prefix: tuple[str, ...] = ()
    if table:
        prefix = ("tool", "onnxtax")
        tool = data.get("tool", {})
        if not isinstance(tool, dict) or "onnxtax" not in tool:
            raise ConfigError(f"{file} has no [tool.onnxtax] table", f"add one, or use an {CONFIG_NAME}")
        data = tool["onnxtax"]
    src = ConfigText(file, text, prefix)
    validate(data, ROOT, (), src)
    return _resolve(data, file, table, src)


def _merge(base: dict | None, over: Any) -> dict:
    out = dict(base or {})
    if isinstance(over, dict):
        out.update(over)
    return out


def _resolve(data: dict, file: Path, table: str, src: ConfigText) -> OnnxtaxConfig:
    root = file.parent
    models_data = data.get("models") or {}
    if not models_data:
        raise ConfigError(f"{src.where(('models',))}: no models defined",
                          'add a table like [models.mymodel] with spec = "model.py:Net" and inputs = ["x:batch,3"]')
    output_dir = root / data.get("output_dir", DEFAULT_OUTPUT_DIR)
    signing = signing_keys(data, root, src)
    models: dict[str, ModelConfig] = {}
    outputs: dict[Path, str] = {}
    for name, entry in models_data.items():
        where = ("models", name)
        if not _NAME.match(name) or name.lower() in RESERVED_NAMES:
            raise ConfigError(f"{src.where(where)}: model name '{name}' cannot name a report file",
                              "use letters, digits, '_', '-', '.' (not " + ", ".join(RESERVED_NAMES) + ")")
        model = _model_config(name, entry, data, root, output_dir, src)
        model.sign_key, model.verify_key, model.require_signature = signing
        if model.output in outputs:
            raise ConfigError(f"{src.where(where + ('output',))}: models '{outputs[model.output]}' and '{name}' "
                              f"both write {model.output}", "give each model its own output path")
        outputs[model.output] = name
        models[name] = model
    reports = root / data.get("reports", DEFAULT_REPORTS)
    return OnnxtaxConfig(file, table, models, reports.resolve(), bool(data.get("fail_fast", False)))


def _model_config(name: str, entry: dict, top: dict, root: Path, output_dir: Path, src: ConfigText) -> ModelConfig:
    from onnxtax.core.specs import check_dims_known, parse_input_specs

    where = ("models", name)
    spec = resolve_spec(entry["spec"], root, src, where + ("spec",))
    hub = spec.startswith(("hf:", "st:"))
    for key in ("random_init", "trust_remote_code"):
        if key in entry and not hub:
            raise ConfigError(f"{src.where(where + (key,))}: {key} applies to hf:DIR and st:DIR specs",
                              "drop it, or give the model as hf:DIR[#task] or st:DIR")
    if hub:
        from onnxtax.core.hub.spec import spec_with_flags

        spec = spec_with_flags(spec, random_init=bool(entry.get("random_init")),
                               trust_remote_code=bool(entry.get("trust_remote_code")))
    if "inputs" not in entry and not hub:
        raise ConfigError(f"{src.where(where)}: missing required key 'inputs'",
                          'add inputs = ["x:batch,128"] (NAME:DIMS[:DTYPE] per forward() argument); an hf:DIR or '
                          'st:DIR spec derives them')
    try:
        specs = parse_input_specs(entry["inputs"]) if "inputs" in entry else derived_inputs(spec)
    except OnnxtaxError as exc:
        key = where + ("inputs",) if "inputs" in entry else where + ("spec",)
        raise ConfigError(f"{src.where(key)}: {exc.message}", exc.hint) from exc
    if not specs:
        raise ConfigError(f"{src.where(where + ('inputs',))}: no inputs",
                          'list one NAME:DIMS[:DTYPE] per forward() argument, e.g. ["x:batch,128"]')
    dims = dict(entry.get("dims", {}))
    check_axes(dims, specs, src, where + ("dims",), check_dims_known)
    output = Path(entry["output"]) if "output" in entry else output_dir / f"{name}.onnx"
    output = (root / output).resolve()
    if output.suffix != ".onnx":
        raise ConfigError(f"{src.where(where + ('output',))}: '{entry['output']}' does not end in .onnx",
                          "name the output like model.onnx")

    pdata = _merge(top.get("parity"), entry.get("parity"))
    pdims = {k: ([v] if isinstance(v, int) else list(v)) for k, v in pdata.get("dims", {}).items()}
    check_axes(pdims, specs, src, where + ("parity", "dims"), check_dims_known)
    input_names = [s.name for s in specs]
    ranges, data_files = domains(entry, where, input_names, root, src)
    data_files += text_files(entry, where, root, src)
    pranges, pfiles = domains(pdata, where + ("parity",), input_names, root, src)
    pfiles += text_files(pdata, where + ("parity",), root, src)
    ranges.update(pranges)
    data_files += [p for p in pfiles if p not in data_files]
    for value in pdata.get("providers", []):
        check_provider(value, src, where + ("parity", "providers"))
    value_ranges = parse_ranges([f"{k}={v}" for k, v in ranges.items()])
    rtol, atol = float(pdata.get("rtol", ParityOptions.rtol)), float(pdata.get("atol", ParityOptions.atol))
    parity = built(src, where + ("parity",), lambda: stage_options(
        ParityOptions, {"localize": True, **pdata}, KEY_ALIASES["parity"], dims=pdims, ranges=value_ranges,
        data_files=list(data_files), providers=list(pdata.get("providers", [])) or None,
        tolerances={k: (float(v.get("rtol", rtol)), float(v.get("atol", atol)))
                    for k, v in pdata.get("tolerances", {}).items()},
        **{k: float(pdata[k]) for k in ("rtol", "atol", "min_cosine", "noise_factor", "localize_budget_s",
                                        "localize_memory_mb") if k in pdata}))

    shared = {k: entry[k] if k in entry else top[k] for k in ("opset", "exporter", "external_data", "target_ort")
              if k in entry or k in top}
    target_key = where + ("target_ort",) if "target_ort" in entry else ("target_ort",)
    export = built(src, target_key if "target_ort" in shared else where, lambda: ExportOptions(
        dims=dims, output_names=list(entry["output_names"]) if "output_names" in entry else None,
        ranges=value_ranges, data_files=list(data_files), **shared))

    ldata = _merge(top.get("lint"), entry.get("lint"))
    lint = built(src, where + ("lint",), lambda: stage_options(
        LintOptions, ldata, KEY_ALIASES["lint"], target_ort=export.target_ort, providers=list(parity.providers or [])))

    bench = None
    top_bench, own_bench = top.get("bench"), entry.get("bench")
    if own_bench is not False and (own_bench is not None or (top_bench is not None and top_bench is not False)):
        bdata = _merge(top_bench if isinstance(top_bench, dict) else None, own_bench)
        bdims = {k: ([v] if isinstance(v, int) else list(v)) for k, v in bdata.get("dims", {}).items()}
        check_axes(bdims, specs, src, where + ("bench", "dims"), check_dims_known)
        for value in bdata.get("providers", []):
            check_provider(value, src, where + ("bench", "providers"))
        for key in bdata.get("max_latency_ms", {}):
            check_latency_key(key, src, where + ("bench", "max_latency_ms", key))
        bench_data = domains({"data": bdata.get("data", [])}, where + ("bench",), input_names, root, src)[1] + \
            text_files(bdata, where + ("bench",), root, src)
        bench = built(src, where + ("bench",), lambda: stage_options(
            BenchOptions, {"cold_start": False, **bdata}, KEY_ALIASES["bench"], dims=bdims, data_files=bench_data,
            # fresh interpreters cost seconds: cold start is off in CI
            providers=list(bdata["providers"]) if "providers" in bdata else parity.providers,
            skip_unavailable=parity.skip_unavailable, ranges=value_ranges, seed=parity.seed,
            profile_dir=(root / bdata["profile_dir"]).resolve() if "profile_dir" in bdata else None,
            max_latency_ms={k: float(v) for k, v in bdata.get("max_latency_ms", {}).items()},
            **{k: float(bdata[k]) for k in ("min_time", "min_speedup") if k in bdata}))

    quantize, quantize_output = None, None
    if "quantize" in entry:
        quantize, quantize_output = resolve_quantize(entry["quantize"], root, output, src, where + ("quantize",),
                                                      parity)

    runtimes = None
    top_rt, own_rt = top.get("runtimes"), entry.get("runtimes")
    if own_rt is not False and (own_rt is not None or (top_rt is not None and top_rt is not False)):
        from onnxtax.runtimes import parse_versions

        rdata = _merge(top_rt if isinstance(top_rt, dict) else None, own_rt)
        try:
            versions = parse_versions(rdata.get("ort", []))
        except OnnxtaxError as exc:
            raise ConfigError(f"{src.where(where + ('runtimes', 'ort'))}: {exc.message}", exc.hint) from exc
        for value in rdata.get("providers", []):
            check_provider(value, src, where + ("runtimes", "providers"))
        # the releases are compared with parity's shapes, samples, ranges and tolerances
        comparison = {f.name: getattr(parity, f.name) for f in fields(RuntimesOptions) if hasattr(parity, f.name)
                      and f.name != "providers"}
        runtimes = built(src, where + ("runtimes",), lambda: RuntimesOptions(
            **comparison, versions=versions, providers=list(rdata.get("providers", [])) or None,
            cache_dir=(root / rdata["cache_dir"]).resolve() if "cache_dir" in rdata else None,
            offline=rdata.get("offline", False)))

    serve = _resolve_serve(top.get("serve"), entry.get("serve"), parity, specs, root, src, where + ("serve",))
    return ModelConfig(name=name, spec=spec, inputs=[str(s) for s in specs], output=output, export=export, lint=lint,
                       lint_source=bool(ldata.get("source", True)), parity=parity, bench=bench, quantize=quantize,
                       quantize_output=quantize_output, runtimes=runtimes, serve=serve)


def _resolve_serve(top_serve: Any, own: Any, parity: ParityOptions, specs: list, root: Path, src: ConfigText,
                   where: tuple[str, ...]) -> ServeOptions | None:
    """`[serve]` / `[models.NAME.serve]`: onnxtax serve-bench's options; its hosts are checked with
    parity's shapes, samples, ranges and tolerances; gates as a number (every path) or a table."""
    from onnxtax.core.specs import symbols_of

    if own is False or (own is None and (top_serve is None or top_serve is False)):
        return None
    sdata = _merge(top_serve if isinstance(top_serve, dict) else None, own)
    for axis in sdata.get("dims", {}):
        if axis not in symbols_of(specs):
            raise ConfigError(f"{src.where(where + ('dims', axis))}: '{axis}' names no dynamic axis of the inputs",
                              suggest(axis, symbols_of(specs), "dynamic axes in inputs"))
    gates = {k: ({"*": float(sdata[k])} if not isinstance(sdata[k], dict) else
                 {str(p): float(v) for p, v in sdata[k].items()}) for k in ("min_qps_at_slo", "max_p99_ms")
             if k in sdata}
    comparison = {f.name: getattr(parity, f.name) for f in fields(ServeOptions) if hasattr(parity, f.name)
                  and f.name not in ("threads",)}
    own_keys = {k: v for k, v in sdata.items() if k not in ("min_qps_at_slo", "max_p99_ms", "dims")}
    return built(src, where, lambda: stage_options(
        ServeOptions, {"cold_start_runs": 1, **own_keys}, KEY_ALIASES["serve"], **comparison,
        request_dims=dict(sdata.get("dims", {})), **gates,
        **{k: float(sdata[k]) for k in ("start_rate", "growth", "duration_s", "warmup_s", "price_per_hour")
           if k in sdata},
        **({"rates": [float(r) for r in sdata["rates"]]} if "rates" in sdata else {}),
        **({"max_wait_ms": [float(w) for w in sdata["max_wait_ms"]]} if "max_wait_ms" in sdata else {}),
        node_dir=(root / sdata["node_dir"]).resolve() if "node_dir" in sdata else None))
