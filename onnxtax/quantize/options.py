"""The options of one quantization: what `onnxtax quantize`, `quantize_model(...)` and a ci
`[models.NAME.quantize]` table set."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxtax.core import defaults
from onnxtax.core.errors import InputSpecError
from onnxtax.core.options import StageOptions, check_choice, check_number, check_positive_int, check_seed
from onnxtax.quantize.graph import CALIBRATION_METHODS, FORMATS

MODES = ("auto", "dynamic", "static")


@dataclass
class QuantizeOptions(StageOptions):
    """evals: `NAME=FILE.npz` (or `FILE.npz`) per segment, arrays keyed by input name, rows on axis 0.
    budgets: `METRIC=VALUE` or `SEGMENT:METRIC=VALUE` (onnxtax.quantize.segments), or Budgets.
    mode: "dynamic", "static" (needs `calibration`), or "auto" (both; the fastest that passes).
    labels / segment_key: names of a label array and of an array splitting each file into segments.
    exclude: globs of node names or module paths kept in FP32; auto_exclude: find more, up to max_exclude.
    providers: where the metrics and latency are measured; default every compute provider.
    min_speedup: also require FP32 p50 / INT8 p50 >= this at every measured batch size and provider."""

    evals: list[str] = field(default_factory=list)
    budgets: list[Any] = field(default_factory=list)
    mode: str = defaults.QUANTIZE_MODE
    calibration: list[str | Path] = field(default_factory=list)
    calibration_method: str = defaults.QUANTIZE_CALIBRATION_METHOD
    quant_format: str = defaults.QUANTIZE_FORMAT
    per_channel: bool = False
    labels: str | None = None
    segment_key: str | None = None
    output_name: str | None = None
    exclude: list[str] = field(default_factory=list)
    auto_exclude: bool = False
    max_exclude: int = defaults.QUANTIZE_MAX_EXCLUDE
    providers: list[Any] | None = None
    batch_size: int = defaults.QUANTIZE_BATCH_SIZE
    bench_batch_sizes: list[int] | None = None
    bench_min_time: float = defaults.QUANTIZE_BENCH_MIN_TIME
    min_speedup: float | None = None
    preprocess: bool = True
    seed: int = defaults.PARITY_SEED

    def validate(self) -> None:
        from onnxtax.quantize.segments import Budget, parse_budgets, parse_eval

        check_choice(self.mode, "--mode", MODES)
        check_choice(self.quant_format, "--format", FORMATS)
        check_choice(self.calibration_method, "--calibration-method", tuple(CALIBRATION_METHODS))
        if self.mode == "static" and not self.calibration:
            raise InputSpecError("--mode static needs calibration data",
                                 "give --calibration FILE.npz with representative inputs (not the --eval data)")
        if self.min_speedup is not None:
            check_number(self.min_speedup, "--min-speedup", "1.2", low=0, strict_low=True)
        check_seed(self.seed)
        check_positive_int(self.batch_size, "--batch-size", "64")
        check_positive_int(self.max_exclude, "--max-exclude", "8", zero=True)
        check_number(self.bench_min_time, "--bench-min-time", "0.3", low=0, strict_low=True)
        for b in self.bench_batch_sizes or []:
            check_positive_int(b, "--bench-batch-sizes", "1,64")
        if not self.budgets:
            raise InputSpecError("no --budget: a quantized model is approved against budgets per segment",
                                 "e.g. --budget agreement@0.5=0.97 --budget tail:agreement@0.5=0.95")
        parse_budgets([b for b in self.budgets if not isinstance(b, Budget)])
        if not self.evals:
            raise InputSpecError("no --eval: a quantized model is approved on evaluation data, segment by segment",
                                 "e.g. --eval ordinary=data/ordinary.npz --eval tail=data/tail.npz")
        parse_eval(self.evals)

    def budget_list(self) -> list:
        from onnxtax.quantize.segments import Budget, parse_budgets

        return [b for b in self.budgets if isinstance(b, Budget)] + parse_budgets(
            [b for b in self.budgets if not isinstance(b, Budget)])
