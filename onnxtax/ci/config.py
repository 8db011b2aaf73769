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

    [models.fraud]                  # one table per model; the name is its report name
    spec = "fraud_detector.py:FraudDetector"    # required
    inputs = ["x:batch,128"]                    # required, NAME:DIMS[:DTYPE] as for --input
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
    test_assumed = true                         # sizes just outside ranges torch.export assumed

    [models.fraud.bench]            # this model only; `bench = false` turns a global one off
    batch_sizes = [1, 8]
    max_latency_ms = { p99 = 5.0 }
    min_speedup = 1.0

    [models.fraud.quantize]         # this model only: an INT8 build approved per segment
    eval = { ordinary = "data/ordinary.npz", tail = "data/tail.npz" }   # required
    budgets = { "agreement@0.5" = 0.97, tail = { "agreement@0.5" = 0.95 } }  # required
    mode = "static"                 # "dynamic" | "static" | "auto"
    calibration = ["data/calibration.npz"]
    output = "build/fraud.int8.onnx"            # default: OUTPUT with .int8.onnx
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from onnxtax.core import defaults
from onnxtax.core.errors import ConfigError, OnnxtaxError

CONFIG_NAME = "onnxtax.toml"
PYPROJECT = "pyproject.toml"
DEFAULT_REPORTS = "onnxtax-reports"
DEFAULT_OUTPUT_DIR = "build/onnx"
# File names `onnxtax ci` writes beside the per-model reports.
RESERVED_NAMES = ("host", "ci", "junit", "lint", "summary", "matrix")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --------------------------------------------------------------------------- dataclasses
# Field defaults come from onnxtax.core.defaults (the library's and --help's); a key read from the
# file replaces the field of the same name (`_from_table`), so a new key is a schema entry and
# a field, nothing more.


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class _Record:
    """to_dict() derived from the dataclass fields (Paths as strings)."""

    def to_dict(self) -> dict:
        return {f.name: (getattr(self, f.name).to_dict() if isinstance(getattr(self, f.name), _Record)
                         else _plain(getattr(self, f.name))) for f in fields(self)}  # type: ignore[arg-type]


@dataclass
class ParityConfig(_Record):
    dims: dict[str, list[int]] = field(default_factory=dict)
    samples: int = defaults.PARITY_SAMPLES
    seed: int = defaults.PARITY_SEED
    ranges: dict[str, str] = field(default_factory=dict)  # name -> "low:high"
    data: list[Path] = field(default_factory=list)
    rtol: float = defaults.PARITY_RTOL
    atol: float = defaults.PARITY_ATOL
    tolerances: dict[str, dict[str, float]] = field(default_factory=dict)  # output -> {"rtol", "atol"}
    providers: list[str] = field(default_factory=list)  # empty: every compute provider on the host
    skip_unavailable: bool = False
    fail_on_fallback: bool = False
    opt_level: str = defaults.OPT_LEVEL
    threads: int | None = None
    min_cosine: float = defaults.PARITY_MIN_COSINE
    allow_constant: list[str] = field(default_factory=list)  # outputs that may be the same for every input
    test_assumed: bool = True  # sizes just outside the ranges torch.export assumed
    localize: bool = True  # ci localises a parity failure unless told not to
    localize_budget_s: float = defaults.LOCALIZE_TIME_BUDGET_S

    def tolerance_of(self, output: str) -> tuple[float, float]:
        """(rtol, atol) of one output: its own entry over the model's."""
        own = self.tolerances.get(output, {})
        return own.get("rtol", self.rtol), own.get("atol", self.atol)


@dataclass
class LintConfig(_Record):
    target_opset: int | None = None
    target_ir: int | None = None
    allow: list[str] = field(default_factory=list)
    fail_on: str = defaults.LINT_FAIL_ON
    source: bool = True  # also lint the PyTorch source (traces the model: seconds for big ones)


@dataclass
class BenchConfig(_Record):
    batch_sizes: list[int] | None = None  # None: the batch sizes of `onnxtax bench`
    dims: dict[str, list[int]] = field(default_factory=dict)
    providers: list[str] | None = None  # None: the parity providers
    threads: int | None = defaults.BENCH_THREADS
    opt_level: str = defaults.OPT_LEVEL
    warmup: int = defaults.BENCH_WARMUP
    min_time: float = defaults.BENCH_MIN_TIME
    cold_start: bool = False  # fresh interpreters cost seconds each: off in CI unless asked
    max_latency_ms: dict[str, float] = field(default_factory=dict)
    min_speedup: float | None = None


@dataclass
class QuantizeConfig(_Record):
    """`[models.NAME.quantize]`: the arguments of `onnxtax quantize` (onnxtax.quantize.run.quantize_model)."""

    output: Path
    evals: list[str]  # NAME=/abs/file.npz
    budgets: list[str]  # [SEGMENT:]METRIC=VALUE
    mode: str = defaults.QUANTIZE_MODE
    format: str = defaults.QUANTIZE_FORMAT
    per_channel: bool = False
    calibration: list[Path] = field(default_factory=list)
    calibration_method: str = defaults.QUANTIZE_CALIBRATION_METHOD
    labels: str | None = None
    segment_key: str | None = None
    output_name: str | None = None
    exclude: list[str] = field(default_factory=list)
    auto_exclude: bool = False
    max_exclude: int = defaults.QUANTIZE_MAX_EXCLUDE
    batch_size: int = defaults.QUANTIZE_BATCH_SIZE
    bench_batch_sizes: list[int] | None = None
    bench_min_time: float = defaults.QUANTIZE_BENCH_MIN_TIME
    min_speedup: float | None = None


@dataclass
class RuntimesConfig(_Record):
    ort: list[str] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)  # empty: cpu
    cache_dir: Path | None = None  # None: runtime_envs.resolve_cache_dir's default
    offline: bool = False


@dataclass
class ModelConfig(_Record):
    name: str
    spec: str  # a file spec made absolute against the config folder
    inputs: list[str]
    output: Path
    opset: int = defaults.OPSET
    exporter: str = defaults.EXPORTER
    external_data: str = defaults.EXTERNAL_DATA
    dims: dict[str, int] = field(default_factory=dict)
    output_names: list[str] | None = None
    # the inputs' value domains, for every stage (export's smoke run, parity, bench): the model's
    # own `ranges`/`data` with its parity ranges/data merged over them
    ranges: dict[str, str] = field(default_factory=dict)
    data: list[Path] = field(default_factory=list)
    parity: ParityConfig = field(default_factory=ParityConfig)
    lint: LintConfig = field(default_factory=LintConfig)
    bench: BenchConfig | None = None
    quantize: QuantizeConfig | None = None
    target_ort: str | None = None
    runtimes: RuntimesConfig | None = None

    @property
    def input_specs(self) -> list:
        from onnxtax.core.specs import parse_input_specs

        return parse_input_specs(self.inputs)


def _from_table(cls, table: dict, /, **resolved: Any):
    """A config dataclass from a validated table: every key of the same name as a field, then
    the values the caller resolved (paths, parsed forms) over them; absent keys keep defaults."""
    names = {f.name for f in fields(cls)}
    return cls(**{**{k: v for k, v in table.items() if k in names}, **resolved})


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
                                  _suggest(name, list(self.models), "models defined"))
            if self.models[name] not in chosen:
                chosen.append(self.models[name])
        return [m for m in self.models.values() if m in chosen]

    def to_dict(self) -> dict:  # not a _Record: `table` "" is written null and models by name
        return {"path": str(self.path), "table": self.table or None, "reports": str(self.reports),
                "fail_fast": self.fail_fast, "models": {k: m.to_dict() for k, m in self.models.items()}}


# --------------------------------------------------------------------------- schema

class _Type:
    """One value kind in the schema: a check and how to name it in an error."""

    def __init__(self, name: str, check: Callable[[Any], bool]):
        self.name = name
        self.check = check


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float))) and not isinstance(v, bool)


INT = _Type("an integer", _is_int)
POS_INT = _Type("a positive integer", lambda v: _is_int(v) and v >= 1)
NONNEG = _Type("a number >= 0", lambda v: _is_num(v) and v >= 0)
POS_NUM = _Type("a number > 0", lambda v: _is_num(v) and v > 0)
BOOL = _Type("true or false", lambda v: isinstance(v, bool))
STR = _Type("a string", lambda v: isinstance(v, str) and v.strip() != "")
STR_LIST = _Type("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v))
POS_INT_LIST = _Type("a list of positive integers",
                     lambda v: isinstance(v, list) and len(v) > 0 and all(_is_int(x) and x >= 1 for x in v))
DIM_VALUES = _Type("a positive integer or a list of them",
                   lambda v: (_is_int(v) and v >= 1) or POS_INT_LIST.check(v))
COSINE = _Type("a number from -1 to 1", lambda v: _is_num(v) and -1 <= v <= 1)
OPSET = _Type(f"an opset between {defaults.MIN_OPSET} and {defaults.MAX_OPSET}",
              lambda v: _is_int(v) and defaults.MIN_OPSET <= v <= defaults.MAX_OPSET)
RANGE = _Type('"LOW:HIGH" or [LOW, HIGH]',
              lambda v: isinstance(v, str) or (isinstance(v, list) and len(v) == 2 and all(_is_num(x) for x in v)))


def _enum(*values: str) -> _Type:
    return _Type(" or ".join(f'"{v}"' for v in values), lambda v: v in values)


class _Table:
    """A TOML table with known keys, or a map from any name to one value kind."""

    def __init__(self, keys: dict[str, Any] | None = None, *, values: Any = None, required: tuple[str, ...] = (),
                 or_false: bool = False):
        self.keys = keys
        self.values = values
        self.required = required
        self.or_false = or_false  # `bench = false` turns off a table given at the top level


TOLERANCE = _Table({"rtol": NONNEG, "atol": NONNEG})
PARITY = _Table({
    "dims": _Table(values=DIM_VALUES), "samples": POS_INT, "seed": INT,
    "ranges": _Table(values=RANGE), "data": STR_LIST, "rtol": NONNEG, "atol": NONNEG,
    "tolerances": _Table(values=TOLERANCE), "providers": STR_LIST, "skip_unavailable": BOOL,
    "fail_on_fallback": BOOL, "opt_level": _enum("disable", "basic", "extended", "all"), "threads": POS_INT,
    "min_cosine": COSINE, "allow_constant": STR_LIST, "test_assumed": BOOL,
    "localize": BOOL, "localize_budget_s": POS_NUM,
})
LINT = _Table({"target_opset": POS_INT, "target_ir": POS_INT, "allow": STR_LIST, "source": BOOL,
               "fail_on": _enum("error", "warning", "info")})
BENCH = _Table({
    "batch_sizes": POS_INT_LIST, "dims": _Table(values=DIM_VALUES), "providers": STR_LIST, "threads": POS_INT,
    "opt_level": _enum("disable", "basic", "extended", "all"), "warmup": POS_INT, "min_time": POS_NUM,
    "cold_start": BOOL, "max_latency_ms": _Table(values=POS_NUM), "min_speedup": POS_NUM,
}, or_false=True)
BUDGETS = _Type("numbers per metric, or a table of them per segment",
                lambda v: isinstance(v, dict) and all(_is_num(x) or (isinstance(x, dict) and x and all(
                    _is_num(y) for y in x.values())) for x in v.values()))
QUANTIZE = _Table({
    "output": STR, "eval": _Table(values=STR), "budgets": BUDGETS, "mode": _enum("dynamic", "static", "auto"),
    "format": _enum("qdq", "qoperator"), "per_channel": BOOL, "calibration": STR_LIST,
    "calibration_method": _enum("minmax", "entropy", "percentile", "distribution"), "labels": STR,
    "segment_key": STR, "output_name": STR, "exclude": STR_LIST, "auto_exclude": BOOL, "max_exclude": INT,
    "batch_size": POS_INT, "bench_batch_sizes": POS_INT_LIST, "bench_min_time": POS_NUM, "min_speedup": POS_NUM,
}, required=("eval", "budgets"))
RUNTIMES = _Table({"ort": STR_LIST, "providers": STR_LIST, "cache_dir": STR, "offline": BOOL},
                  or_false=True)  # `ort` is required after merging the top-level table with the model's
_SHARED = {"opset": OPSET, "exporter": _enum("dynamo", "torchscript"),
           "external_data": _enum("auto", "always", "never"), "parity": PARITY, "lint": LINT, "bench": BENCH,
           "target_ort": STR, "runtimes": RUNTIMES}
MODEL = _Table({"spec": STR, "inputs": STR_LIST, "output": STR, "dims": _Table(values=POS_INT),
                "output_names": STR_LIST, "ranges": _Table(values=RANGE), "data": STR_LIST, "quantize": QUANTIZE,
                **_SHARED}, required=("spec", "inputs"))
ROOT = _Table({"output_dir": STR, "reports": STR, "fail_fast": BOOL, "models": _Table(values=MODEL), **_SHARED})


# --------------------------------------------------------------------------- locating errors

class _ConfigText:
    """The file text, to point errors at a line (tomllib keeps none)."""

    def __init__(self, path: Path, text: str, prefix: tuple[str, ...]):
        self.path = path
        self.lines = text.splitlines()
        self.prefix = prefix

    def where(self, keypath: tuple[str, ...]) -> str:
        full = self.prefix + keypath
        line = self.line_of(full)
        shown = ".".join(_quote_key(k) for k in full)
        return f"{self.path}:{line}: {shown}" if line else f"{self.path}: {shown}"

    def line_of(self, full: tuple[str, ...]) -> int | None:
        """The line defining `full`: `key =` inside the deepest table header that is a
        prefix of it (dotted and quoted keys allowed), else the header itself."""
        header: tuple[str, ...] = ()
        best: tuple[int, int] | None = None  # (matched depth, line)
        below: int | None = None  # the first header of a table inside `full`
        for number, raw in enumerate(self.lines, 1):
            line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith(("'", '"')) else raw.strip()
            m = re.match(r"^\[\[?\s*(.+?)\s*\]\]?$", line)
            if m:
                header = _split_key(m.group(1))
                if header == full:
                    return number
                if header[:len(full)] == full and below is None:
                    below = number  # `[model.a]` defines the unknown key `model`
                continue
            if full[:len(header)] != header:
                continue
            rest = full[len(header):]
            for depth in range(len(rest), 0, -1):
                pattern = r"\s*\.\s*".join(_key_pattern(k) for k in rest[:depth])
                if re.match(rf"^{pattern}\s*=", line):
                    if depth == len(rest):
                        return number
                    if best is None or len(header) + depth > best[0]:
                        best = (len(header) + depth, number)
                    break
            else:
                # a key inside an inline table on this line: `tolerances = { prob = { rtol = 1 } }`
                if rest and re.search(rf"(^|[{{,\s]){_key_pattern(rest[-1])}\s*=", line) and all(
                        re.search(rf"(^|[{{,\s]){_key_pattern(k)}\s*=", line) for k in rest[:1]):
                    if best is None or len(full) > best[0]:
                        best = (len(full), number)
        return best[1] if best else below


def _key_pattern(key: str) -> str:
    k = re.escape(key)
    return rf"(?:{k}|\"{k}\"|'{k}')"


def _split_key(text: str) -> tuple[str, ...]:
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([^.\s]+)', text)
    return tuple(next(p for p in group if p) if any(group) else "" for group in parts)


def _quote_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else f'"{key}"'


def _suggest_key(key: str, schema: "_Table", table: tuple[str, ...]) -> str:
    """A close key of this table, else the sub-table that has this key (`samples` in a
    model table belongs in its `parity` table), else a close key of a sub-table."""
    own = list(schema.keys or {})
    nested = {name: list(sub.keys) for name, sub in (schema.keys or {}).items()
              if isinstance(sub, _Table) and sub.keys is not None}
    homes = [name for name, keys in nested.items() if key in keys]
    if not homes and not difflib.get_close_matches(key, own, n=1, cutoff=0.6):
        homes = [name for name, keys in nested.items() if difflib.get_close_matches(key, keys, n=1, cutoff=0.75)]
        if homes:
            key = difflib.get_close_matches(key, nested[homes[0]], n=1, cutoff=0.75)[0]
            homes = homes[:1]
    if not homes:
        return _suggest(key, own)
    options = " or ".join(f"'{home}.{key}'" for home in homes)
    tables = " or ".join("[" + ".".join(_quote_key(k) for k in table + (home,)) + "]" for home in homes)
    return f"did you mean {options}? `{key} = ...` goes in {tables}"


def _suggest(word: str, choices: list[str], what: str = "known keys") -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"{what}: {', '.join(sorted(choices))}" if choices else f"no {what}"


# --------------------------------------------------------------------------- validation

def _validate(value: Any, schema: Any, keypath: tuple[str, ...], src: _ConfigText) -> None:
    if isinstance(schema, _Table):
        if schema.or_false and value is False:
            return
        if not isinstance(value, dict):
            kind = "a table" + (" or false" if schema.or_false else "")
            raise ConfigError(f"{src.where(keypath)} must be {kind}, not {_describe(value)}",
                              f"write it as [{'.'.join(src.prefix + keypath)}] with its keys below")
        for key in schema.required:
            if key not in value:
                raise ConfigError(f"{src.where(keypath)}: missing required key '{key}'",
                                  f"add `{key} = ...` to [{'.'.join(_quote_key(k) for k in src.prefix + keypath)}]")
        for key, item in value.items():
            if schema.keys is not None:
                if key not in schema.keys:
                    raise ConfigError(f"{src.where(keypath + (key,))}: unknown key '{key}'",
                                      _suggest_key(key, schema, src.prefix + keypath))
                _validate(item, schema.keys[key], keypath + (key,), src)
            else:
                _validate(item, schema.values, keypath + (key,), src)
        return
    if not schema.check(value):
        raise ConfigError(f"{src.where(keypath)} must be {schema.name}, not {_describe(value)}",
                          "see docs/ci.md for every key and its type")


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return f"the list {value!r}"[:80]
    if isinstance(value, str):
        return f"the string {value!r}"[:80]
    return f"{type(value).__name__} {value!r}"[:80]


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
    src = _ConfigText(file, text, prefix)
    _validate(data, ROOT, (), src)
    return _resolve(data, file, table, src)


def _merge(base: dict | None, over: Any) -> dict:
    out = dict(base or {})
    if isinstance(over, dict):
        out.update(over)
    return out


def _resolve(data: dict, file: Path, table: str, src: _ConfigText) -> OnnxtaxConfig:
    root = file.parent
    models_data = data.get("models") or {}
    if not models_data:
        raise ConfigError(f"{src.where(('models',))}: no models defined",
                          'add a table like [models.mymodel] with spec = "model.py:Net" and inputs = ["x:batch,3"]')
    output_dir = root / data.get("output_dir", DEFAULT_OUTPUT_DIR)
    models: dict[str, ModelConfig] = {}
    outputs: dict[Path, str] = {}
    for name, entry in models_data.items():
        where = ("models", name)
        if not _NAME.match(name) or name.lower() in RESERVED_NAMES:
            raise ConfigError(f"{src.where(where)}: model name '{name}' cannot name a report file",
                              "use letters, digits, '_', '-', '.' (not " + ", ".join(RESERVED_NAMES) + ")")
        model = _model_config(name, entry, data, root, output_dir, src)
        if model.output in outputs:
            raise ConfigError(f"{src.where(where + ('output',))}: models '{outputs[model.output]}' and '{name}' "
                              f"both write {model.output}", "give each model its own output path")
        outputs[model.output] = name
        models[name] = model
    reports = root / data.get("reports", DEFAULT_REPORTS)
    return OnnxtaxConfig(file, table, models, reports.resolve(), bool(data.get("fail_fast", False)))


def _model_config(name: str, entry: dict, top: dict, root: Path, output_dir: Path, src: _ConfigText) -> ModelConfig:
    from onnxtax.core.specs import check_dims_known, parse_input_specs

    where = ("models", name)
    spec = _resolve_spec(entry["spec"], root, src, where + ("spec",))
    try:
        specs = parse_input_specs(entry["inputs"])
    except OnnxtaxError as exc:
        raise ConfigError(f"{src.where(where + ('inputs',))}: {exc.message}", exc.hint) from exc
    if not specs:
        raise ConfigError(f"{src.where(where + ('inputs',))}: no inputs",
                          'list one NAME:DIMS[:DTYPE] per forward() argument, e.g. ["x:batch,128"]')
    dims = dict(entry.get("dims", {}))
    _check_axes(dims, specs, src, where + ("dims",), check_dims_known)
    output = Path(entry["output"]) if "output" in entry else output_dir / f"{name}.onnx"
    output = (root / output).resolve()
    if output.suffix != ".onnx":
        raise ConfigError(f"{src.where(where + ('output',))}: '{entry['output']}' does not end in .onnx",
                          "name the output like model.onnx")

    pdata = _merge(top.get("parity"), entry.get("parity"))
    pdims = {k: ([v] if isinstance(v, int) else list(v)) for k, v in pdata.get("dims", {}).items()}
    _check_axes(pdims, specs, src, where + ("parity", "dims"), check_dims_known)
    input_names = [s.name for s in specs]
    ranges, data_files = _domains(entry, where, input_names, root, src)
    pranges, pfiles = _domains(pdata, where + ("parity",), input_names, root, src)
    ranges.update(pranges)
    data_files += [p for p in pfiles if p not in data_files]
    for value in pdata.get("providers", []):
        _check_provider(value, src, where + ("parity", "providers"))
    parity = _from_table(
        ParityConfig, pdata, dims=pdims, ranges=ranges, data=data_files,
        tolerances={k: {t: float(x) for t, x in v.items()} for k, v in pdata.get("tolerances", {}).items()},
        **{k: float(pdata[k]) for k in ("rtol", "atol", "min_cosine", "localize_budget_s") if k in pdata})

    ldata = _merge(top.get("lint"), entry.get("lint"))
    if ldata.get("allow"):
        from onnxtax.lint import parse_allow

        try:
            parse_allow(ldata["allow"])
        except OnnxtaxError as exc:
            raise ConfigError(f"{src.where(where + ('lint', 'allow'))}: {exc.message}", exc.hint) from exc
    lint = _from_table(LintConfig, ldata)

    bench = None
    top_bench, own_bench = top.get("bench"), entry.get("bench")
    if own_bench is not False and (own_bench is not None or (top_bench is not None and top_bench is not False)):
        bdata = _merge(top_bench if isinstance(top_bench, dict) else None, own_bench)
        bdims = {k: ([v] if isinstance(v, int) else list(v)) for k, v in bdata.get("dims", {}).items()}
        _check_axes(bdims, specs, src, where + ("bench", "dims"), check_dims_known)
        for value in bdata.get("providers", []):
            _check_provider(value, src, where + ("bench", "providers"))
        for key in bdata.get("max_latency_ms", {}):
            _check_latency_key(key, src, where + ("bench", "max_latency_ms", key))
        bench = _from_table(
            BenchConfig, bdata, dims=bdims,
            max_latency_ms={k: float(v) for k, v in bdata.get("max_latency_ms", {}).items()},
            **{k: float(bdata[k]) for k in ("min_time", "min_speedup") if k in bdata})

    quantize = _resolve_quantize(entry["quantize"], root, output, src, where + ("quantize",)) \
        if "quantize" in entry else None

    target_ort = entry.get("target_ort", top.get("target_ort"))
    if target_ort is not None:
        from onnxtax.core.ort_compat import limits_for

        key = where + ("target_ort",) if "target_ort" in entry else ("target_ort",)
        try:
            limits_for(target_ort)
        except OnnxtaxError as exc:
            raise ConfigError(f"{src.where(key)}: {exc.message}", exc.hint) from exc
    runtimes = None
    top_rt, own_rt = top.get("runtimes"), entry.get("runtimes")
    if own_rt is not False and (own_rt is not None or (top_rt is not None and top_rt is not False)):
        from onnxtax.runtimes.matrix import parse_versions

        rdata = _merge(top_rt if isinstance(top_rt, dict) else None, own_rt)
        try:
            versions = parse_versions(rdata.get("ort", []))
        except OnnxtaxError as exc:
            raise ConfigError(f"{src.where(where + ('runtimes', 'ort'))}: {exc.message}", exc.hint) from exc
        for value in rdata.get("providers", []):
            _check_provider(value, src, where + ("runtimes", "providers"))
        runtimes = RuntimesConfig(ort=versions, providers=list(rdata.get("providers", [])),
                                  cache_dir=(root / rdata["cache_dir"]).resolve() if "cache_dir" in rdata else None,
                                  offline=rdata.get("offline", False))

    shared = {k: entry[k] if k in entry else top[k] for k in ("opset", "exporter", "external_data")
              if k in entry or k in top}
    return ModelConfig(name=name, spec=spec, inputs=[str(s) for s in specs], output=output, dims=dims,
                       output_names=list(entry["output_names"]) if "output_names" in entry else None,
                       ranges=dict(ranges), data=list(data_files), parity=parity, lint=lint, bench=bench,
                       quantize=quantize, target_ort=target_ort, runtimes=runtimes, **shared)


def _domains(table: dict, where: tuple[str, ...], input_names: list[str], root: Path, src: _ConfigText
             ) -> tuple[dict[str, str], list[Path]]:
    """`ranges` and `data` of one table (a model's, or its parity table), checked."""
    from onnxtax.core.specs import parse_ranges

    ranges: dict[str, str] = {}
    for key, value in table.get("ranges", {}).items():
        text = value if isinstance(value, str) else f"{value[0]}:{value[1]}"
        kp = where + ("ranges", key)
        if key not in input_names:
            raise ConfigError(f"{src.where(kp)}: '{key}' is not an input of this model",
                              _suggest(key, input_names, "inputs"))
        try:
            parse_ranges([f"{key}={text}"])
        except OnnxtaxError as exc:
            raise ConfigError(f"{src.where(kp)}: {exc.message}", 'write it as "LOW:HIGH", e.g. "0:1000"') from exc
        ranges[key] = text
    data_files = []
    for item in table.get("data", []):
        p = (root / item).resolve()
        if not p.is_file():
            raise ConfigError(f"{src.where(where + ('data',))}: data file '{item}' does not exist "
                              f"(looked at {p})", "paths are relative to the config file's folder")
        data_files.append(p)
    return ranges, data_files


def _resolve_spec(spec: str, root: Path, src: _ConfigText, keypath: tuple[str, ...]) -> str:
    """A file spec relative to the config folder becomes absolute; its file must exist."""
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name or "/" in name or "\\" in name:
        raise ConfigError(f"{src.where(keypath)}: spec '{spec}' has no ':NAME'",
                          'write it as "path/to/file.py:NAME" or "package.module:NAME"')
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = (root / Path(target).expanduser()).resolve()
        if not path.is_file():
            raise ConfigError(f"{src.where(keypath)}: model file '{target}' does not exist (looked at {path})",
                              "spec paths are relative to the config file's folder")
        return f"{path}:{name}"
    return spec


def _check_axes(dims: dict, specs: list, src: _ConfigText, keypath: tuple[str, ...], check: Callable) -> None:
    from onnxtax.core.specs import symbols_of

    known = symbols_of(specs)
    for axis in dims:
        if axis not in known:
            hint = _suggest(axis, known, "dynamic axes in inputs") if known else "no input declares a dynamic axis"
            raise ConfigError(f"{src.where(keypath + (axis,))}: '{axis}' names no dynamic axis of the inputs", hint)
    check(dims, specs)


def _check_provider(text: str, src: _ConfigText, keypath: tuple[str, ...]) -> None:
    from onnxtax.core.providers import parse_provider

    try:
        parse_provider(text)
    except OnnxtaxError as exc:
        raise ConfigError(f"{src.where(keypath)}: {exc.message}", exc.hint) from exc


def _check_latency_key(key: str, src: _ConfigText, keypath: tuple[str, ...]) -> None:
    stat, _, batch = key.partition("@")
    stats = ["p50", "p90", "p99", "max"]
    if stat not in stats or (batch and not batch.isdigit()):
        raise ConfigError(f"{src.where(keypath)}: '{key}' is not a latency gate",
                          _suggest(stat, stats, "statistics") + " (optionally @BATCH, e.g. p99@1)")


def _resolve_quantize(q: dict, root: Path, fp32_output: Path, src: _ConfigText, where: tuple[str, ...]
                      ) -> QuantizeConfig:
    """Data files must exist; budgets must parse; the INT8 output may not overwrite the FP32 one."""
    from onnxtax.quantize.segments import parse_budgets

    def existing(item: str, key: str) -> Path:
        p = (root / item).resolve()
        if not p.is_file():
            raise ConfigError(f"{src.where(where + (key,))}: data file '{item}' does not exist (looked at {p})",
                              "paths are relative to the config file's folder")
        return p

    evals = [f"{name}={existing(item, 'eval')}" for name, item in q["eval"].items()]
    budgets = []
    for key, value in q["budgets"].items():
        if isinstance(value, dict):
            budgets += [f"{key}:{metric}={limit}" for metric, limit in value.items()]
        else:
            budgets.append(f"{key}={value}")
    try:
        parse_budgets(budgets)
    except OnnxtaxError as exc:
        raise ConfigError(f"{src.where(where + ('budgets',))}: {exc.message}", exc.hint) from exc
    for key, value in q["budgets"].items():
        if isinstance(value, dict) and key not in q["eval"] and q.get("segment_key") is None:
            raise ConfigError(f"{src.where(where + ('budgets', key))}: '{key}' is no segment of `eval`",
                              _suggest(key, sorted(q["eval"]), "segments"))
    output = (root / q["output"]).resolve() if "output" in q else fp32_output.with_name(
        fp32_output.name[:-len(".onnx")] + ".int8.onnx")
    if output == fp32_output or output.suffix != ".onnx":
        raise ConfigError(f"{src.where(where + ('output',))}: the INT8 model needs its own .onnx path",
                          'e.g. output = "build/model.int8.onnx"')
    if q.get("mode") == "static" and not q.get("calibration"):
        raise ConfigError(f"{src.where(where + ('mode',))}: mode \"static\" needs `calibration` files",
                          'add calibration = ["data/calibration.npz"] (representative inputs, not the eval data)')
    if q.get("max_exclude", 0) < 0:
        raise ConfigError(f"{src.where(where + ('max_exclude',))} must be 0 or more")
    return _from_table(QuantizeConfig, q, output=output, evals=evals, budgets=budgets,
                       calibration=[existing(item, "calibration") for item in q.get("calibration", [])],
                       **{k: float(q[k]) for k in ("bench_min_time", "min_speedup") if k in q})
