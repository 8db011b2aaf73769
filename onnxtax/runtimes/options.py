"""The options of one runtime-matrix run: what `onnxtax runtimes`, `check_runtimes(...)` and a ci
`[runtimes]` table set. The comparison part (shapes, samples, tolerances) is parity's."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxtax.core.errors import InputSpecError
from onnxtax.parity.options import ComparisonOptions
from onnxtax.runtimes.envs import parse_versions


@dataclass
class RuntimesOptions(ComparisonOptions):
    """versions: exact onnxruntime releases ("1.16.3"), each run in its cached virtualenv.
    providers: provider texts (`cpu`, `openvino:device_type=CPU`); default cpu. A provider a
    release's package lacks is reported "unavailable", never faked. cache_dir: the virtualenv
    cache (onnxtax.runtimes.envs); offline: never build one. export_sizes: the export-time size
    of each dynamic axis, when no manifest records it (export's check of its target release)."""

    versions: list[str] = field(default_factory=list)
    providers: list[Any] | None = None
    cache_dir: str | Path | None = None
    offline: bool = False
    export_sizes: dict[str, int] | None = None

    def validate(self) -> None:
        super().validate()
        if not self.versions:
            raise InputSpecError("no onnxruntime release given", "e.g. --ort 1.16.3 --ort 1.18.1")
        parse_versions(list(self.versions))
