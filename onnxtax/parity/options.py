"""The options of one comparison against the eager model: what `onnxtax parity`, `check_parity(...)`
and a ci `[parity]` table set (and, for their shared part, the runtime matrix)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from onnxtax.core import defaults
from onnxtax.core.errors import InputSpecError
from onnxtax.core.options import (MAX_THREADS, StageOptions, check_choice, check_number, check_positive_int,
                                  check_seed)
from onnxtax.core.specs import ValueRange

SHARE_WEIGHTS_MODES = ("auto", "always", "never")


def parse_tolerances(texts: Sequence[str]) -> dict[str, tuple[float, float]]:
    """`--tolerance logits=1e-3:1e-4` -> {"logits": (1e-3, 1e-4)}."""
    out: dict[str, tuple[float, float]] = {}
    for text in texts:
        name, sep, value = text.partition("=")
        rtol_text, sep2, atol_text = value.partition(":")
        try:
            pair = (float(rtol_text), float(atol_text))
        except ValueError:
            pair = None
        if not sep or not sep2 or not name.strip() or pair is None or min(pair) < 0 or not all(
                map(math.isfinite, pair)):
            raise InputSpecError(f"--tolerance '{text}' needs OUTPUT=RTOL:ATOL with non-negative numbers",
                                 "e.g. --tolerance logits=1e-3:1e-4")
        out[name.strip()] = pair
    return out


@dataclass
class ComparisonOptions(StageOptions):
    """What any comparison with the eager model runs (parity, the runtime matrix): the shapes and
    samples, the inputs' value ranges and data files, and the rule an output passes by
    (onnxtax.core.compare)."""

    dims: dict[str, list[int]] = field(default_factory=dict)  # sizes per dynamic axis, e.g. {"batch": [1, 8, 33]}
    samples: int = defaults.PARITY_SAMPLES
    seed: int = defaults.PARITY_SEED
    ranges: dict[str, ValueRange | tuple[float, float]] = field(default_factory=dict)
    data_files: list[str | Path] = field(default_factory=list)
    rtol: float = defaults.PARITY_RTOL
    atol: float = defaults.PARITY_ATOL
    tolerances: dict[str, tuple[float, float]] = field(default_factory=dict)  # per ONNX output: (rtol, atol)
    min_cosine: float | None = defaults.PARITY_MIN_COSINE
    noise_factor: float | None = None  # k; None: 64 for float32 outputs, 12 for float16/bfloat16; 0: fixed floors
    opt_level: str = defaults.OPT_LEVEL
    max_shapes: int = defaults.PARITY_MAX_SHAPES

    def validate(self) -> None:
        check_positive_int(self.samples, "--samples", "3", zero=True)
        if self.samples == 0 and not self.data_files:
            raise InputSpecError("--samples 0: need at least one sample", "use --samples 1 or more, or --data")
        check_seed(self.seed)
        check_choice(self.opt_level, "--opt-level", tuple(defaults.ORT_OPT_LEVELS))
        # a NaN bound makes every `diff > bound` false: the gate would pass anything
        check_number(self.rtol, "--rtol", "1e-4", low=0)
        check_number(self.atol, "--atol", "1e-5", low=0)
        if self.noise_factor is not None:
            check_number(self.noise_factor, "--noise-factor", "64", low=0)
        for name, pair in (self.tolerances or {}).items():
            if len(pair) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in pair):
                raise InputSpecError(f"tolerance of '{name}' is {pair}: need (rtol, atol), finite and non-negative",
                                     "e.g. --tolerance logits=1e-3:1e-4")
        if self.min_cosine is not None:
            check_number(self.min_cosine, "--min-cosine", "0.999", low=-1.0, high=1.0)
        check_positive_int(self.max_shapes, "--max-shapes", "9")
        for axis, values in (self.dims or {}).items():
            for v in values:
                check_positive_int(v, f"--dim {axis}=", "1,8,33")


@dataclass
class ParityOptions(ComparisonOptions):
    """Everything `check_parity` can be told; see its docstring for each field's meaning."""

    allow_constant: list[str] = field(default_factory=list)
    test_assumed: bool = True
    providers: list[Any] | None = None  # texts or ProviderRequests; None: every compute provider on this host
    skip_unavailable: bool = False
    fail_on_fallback: bool = False
    threads: int | None = None
    share_weights: str = defaults.PARITY_SHARE_WEIGHTS
    localize: bool = False
    localize_budget_s: float = defaults.LOCALIZE_TIME_BUDGET_S
    localize_memory_mb: float = defaults.LOCALIZE_MEMORY_MB

    def validate(self) -> None:
        super().validate()
        if self.threads is not None:
            check_positive_int(self.threads, "--threads", "2", zero=True, high=MAX_THREADS)
        check_choice(self.share_weights, "--share-weights", SHARE_WEIGHTS_MODES)
        check_number(self.localize_budget_s, "--localize-budget", "120", low=0, strict_low=True)
        check_number(self.localize_memory_mb, "--localize-memory", "512", low=0, strict_low=True)
