"""Shared report plumbing: JSON-ready dicts, JUnit XML, GitHub step summaries, host facts.

Each stage owns its result dataclasses (export.ExportResult, parity.ParityReport,
lint.LintReport, bench.BenchReport); this module turns them into files CI systems read.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
from pathlib import Path
from typing import Any

from onnxtax.core.errors import EXIT_CHECK_FAILED, EXIT_OK
from onnxtax.core.files import write_output


class Verdict:
    """The result contract every stage report follows: `passed`, truthy when it passed, and the
    exit code that follows from it (0 passed, 1 a check failed). Usage errors never reach a
    report: they are raised before the work (exit 2)."""

    passed: bool

    def __bool__(self) -> bool:
        return self.passed

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.passed else EXIT_CHECK_FAILED


def jsonable(value: Any) -> Any:
    """Dataclasses, paths, numpy scalars/arrays and non-finite floats -> plain JSON values."""
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, (Path, os.PathLike)):  # a TextFile (onnxtax.core.hub.text) too
        return os.fspath(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # "nan", "inf": JSON has neither
    if type(value).__module__ == "numpy":
        if hasattr(value, "tolist"):
            return jsonable(value.tolist())
    return value


def format_size(n_bytes: int | float) -> str:
    """A file size in the largest unit it fills, three significant digits: 812 B, 1.89 KiB,
    86.8 MiB, 2.68 GiB (not 88909.3 KiB)."""
    size, unit = float(n_bytes), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    if unit == "B":
        return f"{int(size)} B"
    return f"{size:.0f} {unit}" if size >= 100 else f"{size:.1f} {unit}" if size >= 10 else f"{size:.2f} {unit}"


GITHUB_SUMMARY = "$GITHUB_STEP_SUMMARY"


def append_github_summary(markdown: str) -> bool:
    """Append to $GITHUB_STEP_SUMMARY when CI provides it; True if written."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return False
    write_output(target, markdown.rstrip() + "\n\n", GITHUB_SUMMARY, append=True)
    return True


def package_versions() -> dict[str, str | None]:
    from importlib import metadata

    from onnxtax.core.version import VERSION as __version__
    from onnxtax.core.providers import ort_package

    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("torch", "onnx", "onnxscript", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    dist, ver = ort_package()
    out["onnxruntime"] = ver
    out["onnxruntime_package"] = dist
    out["onnxtax"] = __version__
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_facts() -> dict:
    """What a report needs so runs from different machines can be merged and told apart."""
    from onnxtax.core.providers import available_providers, compute_providers

    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpus": gpu_names(),
        "providers_available": list(available_providers()),
        "compute_providers": compute_providers(),
        "versions": package_versions(),
    }


def gpu_names() -> list[str]:
    """GPU names where the host can tell without extra packages (nvidia-smi); else []."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []
