"""One options object per stage: what the CLI, the library API and the ci config all build.

A stage's options are a dataclass (`ParityOptions`, `BenchOptions`, ...) whose fields carry the
defaults of onnxtax.core.defaults and whose `validate()` is the one place their values are
checked, before any work: the command's flags, the API's keyword arguments and the config's
table each build the same object, so the three cannot drift apart. A stage function takes
`options=` or the same names as keyword arguments (`check_parity(m, p, samples=5)`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, TypeVar

from onnxtax.core.errors import InputSpecError

T = TypeVar("T", bound="StageOptions")


class StageOptions:
    """Base of every stage's options dataclass."""

    def validate(self) -> None:
        """Raise OnnxtaxError (exit 2) naming the flag and the fix for a value that cannot work."""

    @classmethod
    def build(cls: type[T], options: T | None = None, /, **kwargs: Any) -> T:
        """The options to run with: `options` (or the defaults) with `kwargs` over them, validated.
        An unknown keyword is a TypeError, as for any function."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(f"{cls.__name__} has no option {', '.join(unknown)}")
        built = cls(**kwargs) if options is None else dataclasses.replace(options, **kwargs)  # type: ignore[type-var]
        built.validate()
        return built

    def to_dict(self) -> dict:
        from onnxtax.core.report import jsonable

        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


# More threads than any host has cores; ORT takes a C int and fails with a traceback above 2**31.
MAX_THREADS = 1024


def check_positive_int(value: Any, flag: str, example: str, *, zero: bool = False, high: int | None = None) -> None:
    """`value` is an integer >= 1 (>= 0 with zero=True) and <= `high`, else an input error naming `flag`."""
    low = 0 if zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        raise InputSpecError(f"{flag} {value!r}: must be an integer >= {low}" + (f" and <= {high}" if high else ""),
                             f"e.g. {flag} {example}")


def check_seed(value: Any, flag: str = "--seed") -> None:
    """A seed numpy's generators take: a negative one fails deep inside the run, with a traceback."""
    check_positive_int(value, flag, "0", zero=True)


def check_number(value: Any, flag: str, example: str, *, low: float | None = None, high: float | None = None,
                 strict_low: bool = False) -> None:
    """`value` is a finite number within the bounds, else an input error naming `flag` and the bound."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if strict_low else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        bound = []
        if low is not None:
            bound.append(f"{'>' if strict_low else '>='} {low:g}")
        if high is not None:
            bound.append(f"<= {high:g}")
        raise InputSpecError(f"{flag} {value!r}: must be a finite number{' ' + ' and '.join(bound) if bound else ''}",
                             f"e.g. {flag} {example}")


def check_choice(value: Any, flag: str, choices: tuple[str, ...] | list[str]) -> None:
    if value not in choices:
        raise InputSpecError(f"unknown {flag} '{value}'", f"use one of: {', '.join(choices)}")
