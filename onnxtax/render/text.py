"""Formatting every renderer shares: numbers, times, markdown cells."""

from __future__ import annotations

import math
from typing import Any


def md_cell(text: Any) -> str:
    """Text that stays inside one markdown table cell."""
    return str(text or "").replace("|", "\\|").replace("\n", " ")


def num(v: float | None, digits: int = 3) -> str:
    """A number in `digits` significant digits; "-" for none, "inf" for an infinity."""
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.{digits}g}"


def ms(value_ms: float) -> str:
    """A duration given in ms, in µs below 1 ms."""
    return f"{value_ms * 1000:.3g} µs" if value_ms < 1 else f"{value_ms:.3g} ms"


def write_figure(fig: Any, path: Any, flag: str = "--plot") -> Any:
    """A matplotlib figure as PNG bytes, written atomically to `path` (the figure closed either way)."""
    import io
    from pathlib import Path

    from onnxtax.core.files import write_output

    png = io.BytesIO()
    try:
        fig.savefig(png, format="png")
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return write_output(Path(path), png.getvalue(), flag)
