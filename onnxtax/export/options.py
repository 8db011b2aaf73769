"""The options of one export: what `onnxtax export`, `export_model(...)` and a ci model table set."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxtax.core import defaults
from onnxtax.core.errors import OnnxtaxError
from onnxtax.core.options import StageOptions, check_choice
from onnxtax.core.specs import ValueRange

EXPORTERS = ("dynamo", "torchscript")
EXTERNAL_DATA_MODES = ("auto", "always", "never")


@dataclass
class ExportOptions(StageOptions):
    """How to export. `ranges` and `data_files` declare the inputs' value domains for the example
    input and the smoke run, as in parity. `target_ort`: a release series ("1.16") or an exact
    release the file must load in."""

    opset: int = defaults.OPSET
    exporter: str = defaults.EXPORTER
    dims: dict[str, int] = field(default_factory=dict)  # example size of each dynamic axis
    output_names: list[str] | None = None
    external_data: str = defaults.EXTERNAL_DATA
    ranges: dict[str, ValueRange | tuple[float, float]] = field(default_factory=dict)
    data_files: list[str | Path] = field(default_factory=list)
    target_ort: str | None = None
    custom_translation_table: dict[Any, Any] | None = None  # torch.onnx's, for custom ops (API only)

    def validate(self) -> None:
        check_choice(self.exporter, "--exporter", EXPORTERS)
        check_choice(self.external_data, "--external-data", EXTERNAL_DATA_MODES)
        if isinstance(self.opset, bool) or not isinstance(self.opset, int) or not (
                defaults.MIN_OPSET <= self.opset <= defaults.MAX_OPSET):
            raise OnnxtaxError(f"--opset {self.opset} is out of range",
                               f"use an opset between {defaults.MIN_OPSET} and {defaults.MAX_OPSET}; 17-20 are typical")
        for axis, size in (self.dims or {}).items():
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise OnnxtaxError(f"--dim {axis}={size}: an export size must be a positive integer",
                                   f"e.g. --dim {axis}=4")
        if self.target_ort:
            from onnxtax.core.ort_compat import limits_for

            limits_for(self.target_ort)  # an unknown release is exit 2 before the export
