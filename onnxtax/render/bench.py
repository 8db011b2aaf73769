"""A benchmark's report rendered: the PNG of latency by batch size (the `plot` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from onnxtax.core.errors import OnnxtaxError

if TYPE_CHECKING:
    from onnxtax.bench import BenchReport


def plot_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def require_plot() -> None:
    """Fail before the benchmark runs, not after, when --plot cannot be honoured."""
    if not plot_available():
        raise OnnxtaxError("--plot needs matplotlib, which is not installed",
                           "pip install 'onnxtax[plot]'")


def write_plot(report: "BenchReport", path: str | Path) -> Path:
    """PNG of p50 (line) with the p90-p99 band, by batch size, one colour per path.
    Written beside the target and renamed into place."""
    import io

    from onnxtax.core.files import write_output

    require_plot()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import math

    from matplotlib.ticker import FuncFormatter

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    xs = [b.batch_size for b in report.batches]
    pids = [p.id for p in report.paths]
    # µs for microsecond models, ms otherwise: tick labels read as numbers, not 10^-2
    top = max((b.latency[pid].p50_ms for b in report.batches for pid in pids), default=1.0)
    unit, scale = ("µs", 1000.0) if top < 1.0 else ("ms", 1.0) if top < 1000.0 else ("s", 0.001)
    for pid in pids:
        p50 = [b.latency[pid].p50_ms * scale for b in report.batches]
        p90 = [b.latency[pid].p90_ms * scale for b in report.batches]
        p99 = [b.latency[pid].p99_ms * scale for b in report.batches]
        (line,) = ax.plot(xs, p50, marker="o", label=f"{pid} p50")
        ax.plot(xs, p99, linestyle="--", color=line.get_color(), linewidth=1, label=f"{pid} p99")
        ax.fill_between(xs, p90, p99, color=line.get_color(), alpha=0.15)
    if len(xs) > 1:
        ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel(f"batch size ({report.settings.get('batch_axis') or 'static'})")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(
        lambda v, _: f"{v:g}" if v > 0 and round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else ""))
    ax.set_ylabel(f"latency per call ({unit}); band: p90-p99")
    threads = report.settings.get("threads")
    ax.set_title(f"{Path(report.onnx).name}: latency by batch size "
                 f"({'default' if threads is None else threads} thread{'' if threads == 1 else 's'})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = io.BytesIO()
    try:
        fig.savefig(png, format="png")
    finally:
        plt.close(fig)
    return write_output(path, png.getvalue(), "--plot")
