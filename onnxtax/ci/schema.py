"""The config file's schema: every table and key with its kind, validated before any work, and
errors that name the file, the line, the key path and the closest known key.

The option tables (`[parity]`, `[bench]`, `[models.NAME.quantize]`, ...) carry a key for every
option of their stage's options object (tests/test_config.py holds them together).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Callable

from onnxtax.core import defaults
from onnxtax.core.errors import ConfigError


class Kind:
    """One value kind in the schema: a check and how to name it in an error."""

    def __init__(self, name: str, check: Callable[[Any], bool]):
        self.name = name
        self.check = check


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    return (isinstance(v, (int, float))) and not isinstance(v, bool)

INT = Kind("an integer", is_int)

POS_INT = Kind("a positive integer", lambda v: is_int(v) and v >= 1)

NONNEG = Kind("a number >= 0", lambda v: is_num(v) and v >= 0)

POS_NUM = Kind("a number > 0", lambda v: is_num(v) and v > 0)

BOOL = Kind("true or false", lambda v: isinstance(v, bool))

STR = Kind("a string", lambda v: isinstance(v, str) and v.strip() != "")

STR_LIST = Kind("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v))

POS_INT_LIST = Kind("a list of positive integers",
                     lambda v: isinstance(v, list) and len(v) > 0 and all(is_int(x) and x >= 1 for x in v))

DIM_VALUES = Kind("a positive integer or a list of them",
                   lambda v: (is_int(v) and v >= 1) or POS_INT_LIST.check(v))

COSINE = Kind("a number from -1 to 1", lambda v: is_num(v) and -1 <= v <= 1)

OPSET = Kind(f"an opset between {defaults.MIN_OPSET} and {defaults.MAX_OPSET}",
              lambda v: is_int(v) and defaults.MIN_OPSET <= v <= defaults.MAX_OPSET)

RANGE = Kind('"LOW:HIGH" or [LOW, HIGH]',
              lambda v: isinstance(v, str) or (isinstance(v, list) and len(v) == 2 and all(is_num(x) for x in v)))


def enum(*values: str) -> Kind:
    return Kind(" or ".join(f'"{v}"' for v in values), lambda v: v in values)


class Table:
    """A TOML table with known keys, or a map from any name to one value kind."""

    def __init__(self, keys: dict[str, Any] | None = None, *, values: Any = None, required: tuple[str, ...] = (),
                 or_false: bool = False):
        self.keys = keys
        self.values = values
        self.required = required
        self.or_false = or_false  # `bench = false` turns off a table given at the top level

TOLERANCE = Table({"rtol": NONNEG, "atol": NONNEG})

PARITY = Table({
    "dims": Table(values=DIM_VALUES), "samples": POS_INT, "seed": INT,
    "ranges": Table(values=RANGE), "data": STR_LIST, "text": STR_LIST, "rtol": NONNEG, "atol": NONNEG,
    "tolerances": Table(values=TOLERANCE), "providers": STR_LIST, "skip_unavailable": BOOL,
    "fail_on_fallback": BOOL, "opt_level": enum("disable", "basic", "extended", "all"), "threads": POS_INT,
    "min_cosine": COSINE, "noise_factor": NONNEG, "allow_constant": STR_LIST, "test_assumed": BOOL,
    "localize": BOOL, "localize_budget_s": POS_NUM, "localize_memory_mb": POS_NUM, "max_shapes": POS_INT,
    "share_weights": enum("auto", "always", "never"),
})

LINT = Table({"target_opset": POS_INT, "target_ir": POS_INT, "allow": STR_LIST, "source": BOOL,
               "fail_on": enum("error", "warning", "info")})

BENCH = Table({
    "batch_sizes": POS_INT_LIST, "dims": Table(values=DIM_VALUES), "providers": STR_LIST, "threads": POS_INT,
    "opt_level": enum("disable", "basic", "extended", "all"), "warmup": POS_INT, "min_time": POS_NUM,
    "cold_start": BOOL, "cold_start_runs": POS_INT, "sweep": BOOL, "profile_dir": STR,
    "max_latency_ms": Table(values=POS_NUM), "min_speedup": POS_NUM, "data": STR_LIST, "text": STR_LIST,
}, or_false=True)

BUDGETS = Kind("numbers per metric, or a table of them per segment",
                lambda v: isinstance(v, dict) and all(is_num(x) or (isinstance(x, dict) and x and all(
                    is_num(y) for y in x.values())) for x in v.values()))

QUANTIZE = Table({
    "output": STR, "eval": Table(values=STR), "budgets": BUDGETS, "mode": enum("dynamic", "static", "auto"),
    "format": enum("qdq", "qoperator"), "per_channel": BOOL, "calibration": STR_LIST,
    "calibration_method": enum("minmax", "entropy", "percentile", "distribution"), "labels": STR,
    "segment_key": STR, "output_name": STR, "exclude": STR_LIST, "auto_exclude": BOOL, "max_exclude": INT,
    "batch_size": POS_INT, "bench_batch_sizes": POS_INT_LIST, "bench_min_time": POS_NUM, "min_speedup": POS_NUM,
    "preprocess": BOOL, "seed": INT,
}, required=("eval", "budgets"))

NUM_OR_TABLE = Kind("a number > 0, or a table of them by path (\"*\", \"eager\", \"ort@1000\")",
                    lambda v: (is_num(v) and v > 0) or (isinstance(v, dict) and len(v) > 0
                                                        and all(is_num(x) and x > 0 for x in v.values())))

NONNEG_LIST = Kind("a list of numbers >= 0", lambda v: isinstance(v, list) and len(v) > 0 and all(
    is_num(x) and x >= 0 for x in v))

POS_LIST = Kind("a list of numbers > 0", lambda v: isinstance(v, list) and len(v) > 0 and all(
    is_num(x) and x > 0 for x in v))

SERVE = Table({
    "paths": STR_LIST, "slo": STR, "max_batch": POS_INT_LIST, "max_wait_ms": NONNEG_LIST, "threads": POS_INT_LIST,
    "workers": POS_INT, "intra_op_threads": POS_INT, "arrival": enum("poisson", "constant"), "rates": POS_LIST,
    "start_rate": POS_NUM, "growth": POS_NUM, "refine": Kind("an integer >= 0", lambda v: is_int(v) and v >= 0),
    "max_levels": POS_INT, "duration_s": POS_NUM, "warmup_s": NONNEG,
    "cold_start_runs": Kind("an integer >= 0", lambda v: is_int(v) and v >= 0), "generator_floor": BOOL,
    "dims": Table(values=POS_INT), "server_cores": POS_INT, "price_per_hour": POS_NUM,
    "min_qps_at_slo": NUM_OR_TABLE, "max_p99_ms": NUM_OR_TABLE, "node_ort": STR, "node_dir": STR, "node": STR,
    "offline": BOOL,
}, or_false=True)

RUNTIMES = Table({"ort": STR_LIST, "providers": STR_LIST, "cache_dir": STR, "offline": BOOL},
                  or_false=True)  # `ort` is required after merging the top-level table with the model's

_SHARED = {"opset": OPSET, "exporter": enum("dynamo", "torchscript"),
           "external_data": enum("auto", "always", "never"), "parity": PARITY, "lint": LINT, "bench": BENCH,
           "target_ort": STR, "runtimes": RUNTIMES, "serve": SERVE}

# `inputs` is required unless the spec is hf:DIR / st:DIR (derived from the folder): checked in config.py
MODEL = Table({"spec": STR, "inputs": STR_LIST, "output": STR, "dims": Table(values=POS_INT),
                "output_names": STR_LIST, "ranges": Table(values=RANGE), "data": STR_LIST, "text": STR_LIST,
                "random_init": BOOL, "trust_remote_code": BOOL, "quantize": QUANTIZE,
                **_SHARED}, required=("spec",))

SIGN = Table({"key": STR}, required=("key",))  # sign every model's artifacts after all its gates passed

VERIFY = Table({"key": STR, "require_signature": BOOL})  # the public key the verify stage checks signatures with

ROOT = Table({"output_dir": STR, "reports": STR, "fail_fast": BOOL, "models": Table(values=MODEL), "sign": SIGN,
              "verify": VERIFY, **_SHARED})


class ConfigText:
    """The file text, to point errors at a line (tomllib keeps none)."""

    def __init__(self, path: Path, text: str, prefix: tuple[str, ...]):
        self.path = path
        self.lines = text.splitlines()
        self.prefix = prefix

    def where(self, keypath: tuple[str, ...]) -> str:
        full = self.prefix + keypath
        line = self.line_of(full)
        shown = ".".join(quote_key(k) for k in full)
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


def quote_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else f'"{key}"'


def suggest_key(key: str, schema: "Table", table: tuple[str, ...]) -> str:
    """A close key of this table, else the sub-table that has this key (`samples` in a
    model table belongs in its `parity` table), else a close key of a sub-table."""
    own = list(schema.keys or {})
    nested = {name: list(sub.keys) for name, sub in (schema.keys or {}).items()
              if isinstance(sub, Table) and sub.keys is not None}
    homes = [name for name, keys in nested.items() if key in keys]
    if not homes and not difflib.get_close_matches(key, own, n=1, cutoff=0.6):
        homes = [name for name, keys in nested.items() if difflib.get_close_matches(key, keys, n=1, cutoff=0.75)]
        if homes:
            key = difflib.get_close_matches(key, nested[homes[0]], n=1, cutoff=0.75)[0]
            homes = homes[:1]
    if not homes:
        return suggest(key, own)
    options = " or ".join(f"'{home}.{key}'" for home in homes)
    tables = " or ".join("[" + ".".join(quote_key(k) for k in table + (home,)) + "]" for home in homes)
    return f"did you mean {options}? `{key} = ...` goes in {tables}"


def suggest(word: str, choices: list[str], what: str = "known keys") -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"{what}: {', '.join(sorted(choices))}" if choices else f"no {what}"


def validate(value: Any, schema: Any, keypath: tuple[str, ...], src: ConfigText) -> None:
    if isinstance(schema, Table):
        if schema.or_false and value is False:
            return
        if not isinstance(value, dict):
            kind = "a table" + (" or false" if schema.or_false else "")
            raise ConfigError(f"{src.where(keypath)} must be {kind}, not {describe(value)}",
                              f"write it as [{'.'.join(src.prefix + keypath)}] with its keys below")
        for key in schema.required:
            if key not in value:
                raise ConfigError(f"{src.where(keypath)}: missing required key '{key}'",
                                  f"add `{key} = ...` to [{'.'.join(quote_key(k) for k in src.prefix + keypath)}]")
        for key, item in value.items():
            if schema.keys is not None:
                if key not in schema.keys:
                    raise ConfigError(f"{src.where(keypath + (key,))}: unknown key '{key}'",
                                      suggest_key(key, schema, src.prefix + keypath))
                validate(item, schema.keys[key], keypath + (key,), src)
            else:
                validate(item, schema.values, keypath + (key,), src)
        return
    if not schema.check(value):
        raise ConfigError(f"{src.where(keypath)} must be {schema.name}, not {describe(value)}",
                          "see docs/ci.md for every key and its type")


def describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return f"the list {value!r}"[:80]
    if isinstance(value, str):
        return f"the string {value!r}"[:80]
    return f"{type(value).__name__} {value!r}"[:80]
