"""Input specs: `NAME:DIMS[:DTYPE]`, dimension values and example inputs.

Kept free of torch and onnxruntime imports so the CLI can parse flags fast; numpy
is imported where arrays are made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from onnxtax.errors import InputSpecError

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
    low: float
    high: float


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
        out[name] = ValueRange(lo, hi)
    return out


@dataclass
class SampleRecipe:
    """How random inputs are drawn: seeded, both signs, several magnitudes."""

    seed: int = 0
    ranges: dict[str, ValueRange] = field(default_factory=dict)


def make_inputs(specs: list[InputSpec], sizes: dict[str, int], recipe: SampleRecipe | None = None,
                sample_index: int = 0) -> dict:
    """Seeded numpy arrays for one sample. Floats alternate magnitude per sample
    (0.1, 1, 10 scales) with both signs; integers stay in their --range (default 0:10),
    bools are random."""
    import numpy as np

    recipe = recipe or SampleRecipe()
    # the sizes are part of the seed: a batch-7 sample must not start with the batch-4 one
    rng = np.random.default_rng([recipe.seed, sample_index, *(sizes[k] for k in sorted(sizes))])
    scale = (1.0, 0.1, 10.0)[sample_index % 3]
    arrays = {}
    for spec in specs:
        shape = concrete_shape(spec, sizes)
        np_dtype = DTYPES[spec.dtype][0]
        rng_range = recipe.ranges.get(spec.name)
        if spec.dtype == "bool":
            arr = rng.random(shape) < 0.5
        elif np_dtype.startswith(("int", "uint")):
            lo, hi = (int(rng_range.low), int(rng_range.high)) if rng_range else (0, 10)
            arr = rng.integers(lo, hi, size=shape, dtype=np_dtype)
        else:
            if rng_range:
                arr = rng.uniform(rng_range.low, rng_range.high, size=shape)
            else:
                arr = rng.standard_normal(shape) * scale
            arr = arr.astype(np_dtype)
        arrays[spec.name] = arr
    return arrays
