"""Input specs: `NAME:DIMS[:DTYPE]`, dimension values and example inputs.

Kept free of torch and onnxruntime imports so the CLI can parse flags fast; numpy
is imported where arrays are made.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from onnxtax.core.errors import InputSpecError

# dtype name -> (numpy dtype name, ONNX TensorProto type name, torch dtype attribute)
DTYPES: dict[str, tuple[str, str, str]] = {
    "float32": ("float32", "FLOAT", "float32"),
    "float16": ("float16", "FLOAT16", "float16"),
    "bfloat16": ("float32", "BFLOAT16", "bfloat16"),  # numpy has no bfloat16: made in fp32, cast in torch
    "float64": ("float64", "DOUBLE", "float64"),
    "int64": ("int64", "INT64", "int64"),
    "int32": ("int32", "INT32", "int32"),
    "int16": ("int16", "INT16", "int16"),
    "int8": ("int8", "INT8", "int8"),
    "uint8": ("uint8", "UINT8", "uint8"),
    "bool": ("bool", "BOOL", "bool"),
}
DTYPE_ALIASES = {"float": "float32", "fp32": "float32", "half": "float16", "fp16": "float16",
                 "bf16": "bfloat16", "double": "float64", "long": "int64", "int": "int32"}
ONNX_TO_DTYPE = {onnx_name: name for name, (_, onnx_name, _) in DTYPES.items()}

# Example size of each dynamic axis while exporting, in order of first appearance.
# Never 0 or 1 (torch.export specialises those) and distinct per axis, so that a
# size baked into the graph can be traced back to the axis it came from.
DEFAULT_EXPORT_SIZES = (3, 5, 7, 11, 13, 17, 19, 23)

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class InputSpec:
    """One forward() argument: name, dims (int = static, str = dynamic axis), dtype."""

    name: str
    dims: tuple[int | str, ...]
    dtype: str = "float32"

    @property
    def symbols(self) -> list[str]:
        return [d for d in self.dims if isinstance(d, str)]

    def __str__(self) -> str:
        return f"{self.name}:[{','.join(str(d) for d in self.dims)}]:{self.dtype}"

    def to_dict(self) -> dict:
        return {"name": self.name, "dims": list(self.dims), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: dict) -> "InputSpec":
        return cls(data["name"], tuple(data["dims"]), data.get("dtype", "float32"))


def normalize_dtype(text: str, *, where: str = "") -> str:
    key = text.strip().lower()
    key = DTYPE_ALIASES.get(key, key)
    if key not in DTYPES:
        raise InputSpecError(
            f"unknown dtype '{text}'{where}",
            f"use one of: {', '.join(DTYPES)}",
        )
    return key


def parse_input_spec(text: str) -> InputSpec:
    """Parse `name:batch,128:float32` or `tokens:[batch,seq]:int64`."""
    example = "e.g. --input x:batch,128:float32 or --input 'ids:[batch,seq]:int64'"
    raw = text.strip()
    name, sep, rest = raw.partition(":")
    if not sep or not name:
        raise InputSpecError(f"--input '{text}' needs NAME:DIMS[:DTYPE]", example)
    if not _IDENT.match(name):
        raise InputSpecError(f"--input '{text}': '{name}' is not a valid input name", example)
    dtype = "float32"
    rest = rest.strip()
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            raise InputSpecError(f"--input '{text}': missing ']'", example)
        dims_text, tail = rest[1:close], rest[close + 1:]
        if tail:
            if not tail.startswith(":"):
                raise InputSpecError(f"--input '{text}': expected ':DTYPE' after ']'", example)
            dtype = normalize_dtype(tail[1:], where=f" in --input '{text}'")
    else:
        dims_text, sep, dtype_text = rest.partition(":")
        if sep:
            dtype = normalize_dtype(dtype_text, where=f" in --input '{text}'")
    dims: list[int | str] = []
    if dims_text.strip():
        for part in dims_text.split(","):
            part = part.strip()
            if re.fullmatch(r"\d+", part):
                dims.append(int(part))
            elif _IDENT.match(part):
                dims.append(part)
            else:
                raise InputSpecError(
                    f"--input '{text}': dimension '{part}' is neither a size nor an axis name",
                    "write a positive integer for a static size or an identifier like batch for a dynamic axis",
                )
    return InputSpec(name, tuple(dims), dtype)


def parse_input_specs(texts: list[str] | tuple[str, ...]) -> list[InputSpec]:
    specs = [parse_input_spec(t) for t in texts]
    seen: set[str] = set()
    for s in specs:
        if s.name in seen:
            raise InputSpecError(f"--input '{s.name}' is given twice", "give each forward() argument once, in order")
        seen.add(s.name)
    return specs


def symbols_of(specs: list[InputSpec]) -> list[str]:
    """Dynamic axis names in order of first appearance."""
    out: list[str] = []
    for s in specs:
        for d in s.symbols:
            if d not in out:
                out.append(d)
    return out


def _parse_assignment(text: str, flag: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not _IDENT.match(name.strip()) or not value.strip():
        raise InputSpecError(f"{flag} '{text}' needs SYMBOL=VALUE", f"e.g. {flag} batch=4")
    return name.strip(), value.strip()


def _positive_int(value: str, text: str, flag: str) -> int:
    if not re.fullmatch(r"\d+", value) or int(value) < 1:
        raise InputSpecError(f"{flag} '{text}': '{value}' is not a positive integer", f"e.g. {flag} batch=4")
    return int(value)


def parse_dim_values(texts: list[str] | tuple[str, ...], *, multi: bool = False) -> dict[str, list[int]]:
    """`--dim batch=4` (export) or `--dim batch=1,8,33` (parity, bench)."""
    out: dict[str, list[int]] = {}
    for text in texts:
        name, value = _parse_assignment(text, "--dim")
        values = [_positive_int(v.strip(), text, "--dim") for v in value.split(",")]
        if len(values) > 1 and not multi:
            raise InputSpecError(f"--dim '{text}' gives several values; export takes one", "e.g. --dim batch=4")
        out[name] = values
    return out


def check_dims_known(dims: dict[str, object], specs: list[InputSpec]) -> None:
    known = symbols_of(specs)
    for name in dims:
        if name not in known:
            hint = f"dynamic axes in --input are: {', '.join(known)}" if known else "no --input declares a dynamic axis"
            raise InputSpecError(f"--dim '{name}' names no dynamic axis", hint)


def export_sizes(specs: list[InputSpec], dims: dict[str, list[int]] | None = None) -> dict[str, int]:
    """The example size of every dynamic axis used while exporting."""
    dims = dims or {}
    check_dims_known(dims, specs)
    sizes: dict[str, int] = {}
    defaults = iter(DEFAULT_EXPORT_SIZES)
    for sym in symbols_of(specs):
        sizes[sym] = dims[sym][0] if sym in dims else next(defaults, 3)
    return sizes


def concrete_shape(spec: InputSpec, sizes: dict[str, int]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) else sizes[d] for d in spec.dims)


@dataclass(frozen=True)
class ValueRange:
    """Values drawn from LOW up to HIGH (integers: HIGH exclusive). `pattern` "right-padding" (an
    attention mask, from a tokenizer that pads on the right): each row is ones, then zeros, at
    least one token and one row full."""

    low: float
    high: float
    pattern: str | None = None
    origin: str | None = None  # where a range not declared by the user comes from ("config.json vocab_size")

    def text(self) -> str:
        if self.pattern == "right-padding":
            return "right padding (each row ones then zeros, 1 to all tokens kept)"
        return f"{self.low:g}:{self.high:g}"

    def to_dict(self) -> dict:
        return {"low": self.low, "high": self.high, **({"pattern": self.pattern} if self.pattern else {}),
                **({"origin": self.origin} if self.origin else {})}

    @classmethod
    def from_dict(cls, data: dict) -> "ValueRange":
        return cls(float(data["low"]), float(data["high"]), data.get("pattern"), data.get("origin"))


def parse_ranges(texts: list[str] | tuple[str, ...]) -> dict[str, ValueRange]:
    """`--range ids=0:30522` (integers: low inclusive, high exclusive)."""
    out: dict[str, ValueRange] = {}
    for text in texts:
        name, value = _parse_assignment(text, "--range")
        low, sep, high = value.partition(":")
        try:
            lo, hi = float(low), float(high)
        except ValueError:
            lo = hi = None  # type: ignore[assignment]
        if not sep or lo is None or hi is None or not lo < hi:
            raise InputSpecError(f"--range '{text}' needs NAME=LOW:HIGH with LOW < HIGH", "e.g. --range ids=0:30522")
        if not math.isfinite(hi - lo):  # inf, or a span a float cannot hold: nothing can be drawn from it
            raise InputSpecError(f"--range '{text}' must be finite (HIGH - LOW = {hi - lo:g})",
                                 "e.g. --range x=-1e6:1e6")
        out[name] = ValueRange(lo, hi)
    return out


# Integer inputs without a declared range: a domain valid for common models, chosen by name.
# Drawing every integer from 0:10 puts an attention mask at 2..9 with fully masked rows,
# outside any model's domain (eager and exported graphs then legitimately differ).
#   mask-like (attention_mask, padding_mask, ...): all ones, every position attended;
#   token_type_ids / segment ids: 0:2 (BERT-like models have 2 types);
#   other ids / tokens / positions / indices / labels: 0:32, below the smallest vocabulary of
#     the transformers tiny test configs (99) and of any real tokenizer or position table;
#   any other integer: 0:10.
MASK_DOMAIN = ValueRange(1, 2)
TYPE_IDS_DOMAIN = ValueRange(0, 2)
IDS_DOMAIN = ValueRange(0, 32)
INT_DOMAIN = ValueRange(0, 10)
_MASK_NAME = re.compile(r"mask", re.I)
_TYPE_IDS_NAME = re.compile(r"token_?type|segment|type_ids", re.I)
_IDS_NAME = re.compile(r"(^|_)ids?($|_)|token|position|index|indices|label|vocab|word", re.I)


def is_integer(spec: InputSpec) -> bool:
    return spec.dtype != "bool" and DTYPES[spec.dtype][0].startswith(("int", "uint"))


def default_domain(spec: InputSpec) -> tuple[ValueRange, str]:
    """The range an integer input is drawn from when none is declared, and why (by name)."""
    if _MASK_NAME.search(spec.name):
        return MASK_DOMAIN, "all ones (default for mask-like names)"
    if _TYPE_IDS_NAME.search(spec.name):
        return TYPE_IDS_DOMAIN, "0:2 (default for token type / segment ids)"
    if _IDS_NAME.search(spec.name):
        return IDS_DOMAIN, "0:32 (default for ids, tokens, positions and indices)"
    return INT_DOMAIN, "0:10 (default for other integers)"


@dataclass
class SampleRecipe:
    """How random inputs are drawn: seeded, both signs, several magnitudes."""

    seed: int = 0
    ranges: dict[str, ValueRange] = field(default_factory=dict)

    def range_of(self, spec: InputSpec) -> ValueRange | None:
        """The declared range, else the name-based default for integers; None: floats' own scales."""
        declared = self.ranges.get(spec.name)
        if declared is not None or not is_integer(spec):
            return declared
        return default_domain(spec)[0]

    def describe(self, spec: InputSpec) -> str:
        """How this input's values are drawn, for reports ("which default was used")."""
        declared = self.ranges.get(spec.name)
        if declared is not None:
            return f"{declared.text()} ({declared.origin or 'declared'})" + (
                ", HIGH exclusive" if is_integer(spec) and not declared.pattern else "")
        if spec.dtype == "bool":
            return "random True/False"
        if is_integer(spec):
            return default_domain(spec)[1]
        return "normal, scale 1, 0.1, 10 by sample, both signs"


def _check_fits_memory(spec: InputSpec, shape: tuple[int, ...]) -> None:
    """A size no host can hold (`x:batch,99999999999999`) is an input error, not a MemoryError
    or the kernel's OOM killer half-way through: refuse one sample above half of this host's
    memory (floats are drawn in float64 first)."""
    import os

    need = math.prod(shape) * 8
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        memory = 1 << 40
    if need > memory // 2:
        from onnxtax.core.report import format_size

        raise InputSpecError(f"input '{spec.name}' at shape {list(shape)} needs {format_size(need)} per sample, "
                             f"more than half of this host's memory ({format_size(memory)})",
                             "declare smaller static sizes in --input, or smaller --dim values")


def make_inputs(specs: list[InputSpec], sizes: dict[str, int], recipe: SampleRecipe | None = None,
                sample_index: int = 0) -> dict:
    """Seeded numpy arrays for one sample. Floats alternate magnitude per sample
    (0.1, 1, 10 scales) with both signs, or stay in their --range; integers stay in their
    --range or the name-based default domain (`default_domain`); bools are random."""
    import numpy as np

    recipe = recipe or SampleRecipe()
    # the sizes are part of the seed: a batch-7 sample must not start with the batch-4 one
    rng = np.random.default_rng([recipe.seed, sample_index, *(sizes[k] for k in sorted(sizes))])
    scale = (1.0, 0.1, 10.0)[sample_index % 3]
    arrays = {}
    for spec in specs:
        shape = concrete_shape(spec, sizes)
        np_dtype = DTYPES[spec.dtype][0]
        _check_fits_memory(spec, shape)
        rng_range = recipe.range_of(spec)
        if spec.dtype == "bool":
            arr = rng.random(shape) < 0.5
        elif np_dtype.startswith(("int", "uint")):
            assert rng_range is not None
            lo, hi = int(rng_range.low), int(rng_range.high)
            info = np.iinfo(np_dtype)
            if not (info.min <= lo and hi <= info.max + 1):
                raise InputSpecError(f"--range {spec.name}={rng_range.low:g}:{rng_range.high:g} leaves the "
                                     f"{spec.dtype} range ({info.min}..{info.max})",
                                     f"integers are drawn from LOW up to HIGH-1, e.g. --range {spec.name}=0:{min(10, info.max)}")
            if rng_range.pattern == "right-padding" and len(shape) == 2 and shape[0] and shape[1]:
                arr = right_padded(rng, shape, np_dtype)
            else:
                arr = rng.integers(lo, max(hi, lo + 1), size=shape, dtype=np_dtype)
        else:
            if rng_range:
                arr = rng.uniform(rng_range.low, rng_range.high, size=shape)
            else:
                arr = rng.standard_normal(shape) * scale
            arr = arr.astype(np_dtype)
        arrays[spec.name] = arr
    return arrays


def right_padded(rng, shape: tuple[int, ...], dtype: str):
    """A right-padded attention mask [rows, tokens]: row i keeps its first L_i tokens (1 <= L_i <=
    tokens), the first row keeps all of them (the batch's longest, as a tokenizer pads to it). No
    row is fully masked: a row with no token attended has no defined answer."""
    import numpy as np

    rows, tokens = shape
    lengths = rng.integers(1, tokens + 1, size=rows)
    lengths[0] = tokens
    return (np.arange(tokens)[None, :] < lengths[:, None]).astype(dtype)


def read_npz(path, flag: str) -> dict:
    """The arrays of one `.npz` file (the one reader of --data, --eval, --calibration); a missing
    file, a `.npy` or a damaged archive is an input error naming the flag and the file."""
    from pathlib import Path

    import numpy as np

    arrays = getattr(path, "arrays", None)
    if callable(arrays):  # a text file, one sentence a line, tokenized by its model's tokenizer (core.hub.text)
        return arrays(flag)
    path = Path(path)
    if path.is_dir():
        raise InputSpecError(f"{flag} {path} is a folder, not an .npz file", "give the .npz file inside it")
    if not path.is_file():
        raise InputSpecError(f"{flag} {path}: file not found", "give an .npz file saved with np.savez")
    from onnxtax.core.files import NPY_KIND, NPZ_KIND, file_kind

    kind = file_kind(path)
    if kind not in (None, NPZ_KIND, NPY_KIND):  # numpy's own words for a damaged archive or a .npy
        raise InputSpecError(f"{flag} {path} is {kind}, not an .npz archive of arrays",
                             "save the inputs with np.savez(path, input_name=array, ...)" + (
                                 "; a text file (one sentence a line) is tokenized for an hf:DIR or st:DIR model "
                                 "whose folder has a tokenizer" if kind == "a text file" else ""))
    try:
        loaded = np.load(path, allow_pickle=False)
        if not hasattr(loaded, "files"):  # a .npy: one array, no input names
            raise ValueError(f"it holds one {type(loaded).__name__} without input names, not an .npz archive")
        with loaded as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as exc:
        raise InputSpecError(f"{flag} {path}: not a readable .npz file ({exc})",
                             "save with np.savez(path, input_name=array, ...)") from exc


def refuse_non_finite(arr: Any, spec: InputSpec, flag: str, path) -> None:
    """Rows with NaN or inf compare as equal on both sides and pass every metric: refused, named."""
    import numpy as np

    if arr.dtype.kind not in "fc" or arr.size == 0 or bool(np.isfinite(arr).all()):
        return
    bad = np.flatnonzero(~np.isfinite(arr.reshape(arr.shape[0], -1) if arr.ndim else arr.reshape(1, -1)).all(axis=1))
    rows = ", ".join(map(str, bad[:8])) + (", ..." if len(bad) > 8 else "")
    raise InputSpecError(f"{flag} {path}: '{spec.name}' has NaN or inf in {len(bad)} of "
                         f"{arr.shape[0] if arr.ndim else 1} rows ({rows}): nothing could be compared on them",
                         "drop those rows, or fill them with real values (np.nan_to_num does not make them real)")


def input_array(arrays: dict, spec: InputSpec, flag: str, path) -> Any:
    """The array of one model input in a data file: present, of the input's dtype, and finite."""
    import numpy as np

    if spec.name not in arrays:
        raise InputSpecError(f"{flag} {path}: no array named '{spec.name}' (it has: {', '.join(arrays) or 'none'})",
                             f"save one array per model input: np.savez(file, {spec.name}=...)")
    arr = arrays[spec.name]
    want = np.dtype(DTYPES[spec.dtype][0])
    if arr.dtype != want:
        raise InputSpecError(f"{flag} {path}: '{spec.name}' has dtype {arr.dtype}, the model input is {spec.dtype}",
                             f"save it as {want} (arr.astype(np.{want}))")
    refuse_non_finite(arr, spec, flag, path)
    return arr


def read_data_file(path, specs: list[InputSpec]) -> tuple[dict, dict[str, int], dict[str, list[int]]]:
    """One `.npz` of real inputs (arrays keyed by input name, one batch), checked against the
    specs: (arrays in spec order, size of each dynamic axis, shape of each input). The one
    reader of --data for export's smoke run and parity."""
    from pathlib import Path

    source, path = path, Path(path)
    arrays = read_npz(source, "--data")
    sizes: dict[str, int] = {}
    shapes: dict[str, list[int]] = {}
    for spec in specs:
        arr = input_array(arrays, spec, "--data", path)
        if arr.ndim != len(spec.dims):
            raise InputSpecError(f"--data {path}: '{spec.name}' has shape {list(arr.shape)}, the model input is "
                                 f"{list(spec.dims)} ({len(spec.dims)} dims)", "save arrays with the input's rank")
        if arr.size == 0:  # nothing to compare: a file that would pass without evidence
            raise InputSpecError(f"--data {path}: '{spec.name}' is empty (shape {list(arr.shape)})",
                                 "save at least one row per input")
        for axis, (want_dim, got) in enumerate(zip(spec.dims, arr.shape)):
            if isinstance(want_dim, int):
                if want_dim != got:
                    raise InputSpecError(f"--data {path}: '{spec.name}' has {got} at axis {axis} where the model "
                                         f"input is fixed at {want_dim} (shape {list(arr.shape)} vs {list(spec.dims)})",
                                         "save arrays whose static dims match the model input")
            elif sizes.setdefault(want_dim, int(got)) != got:
                raise InputSpecError(f"--data {path}: axis '{want_dim}' is {sizes[want_dim]} in one array and {got} "
                                     f"in '{spec.name}'", "arrays in one file are one batch: shared axes must agree")
        shapes[spec.name] = list(arr.shape)
    return {s.name: arrays[s.name] for s in specs}, sizes, shapes
