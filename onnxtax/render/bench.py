"""A benchmark's report rendered: the latency table per batch size, cold start, sweep and profile
tables, and the PNG of latency by batch size (the `plot` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from onnxtax.core.errors import OnnxtaxError

if TYPE_CHECKING:
    from rich.table import Table

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
    from onnxtax.render.text import write_figure

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
    return write_figure(fig, path)


def fmt_ms(ms: float | None) -> str:
    """Latency with a unit a reader can compare at a glance: 8.12 µs, 1.23 ms, 2.10 s."""
    if ms is None:
        return "-"
    if ms < 1.0:
        return f"{ms * 1000:.3g} µs" if ms * 1000 >= 1 else f"{ms * 1e6:.3g} ns"
    if ms < 1000:
        return f"{ms:.3g} ms"
    return f"{ms / 1000:.3g} s"


def _fmt_rate(rate: float) -> str:
    return f"{rate / 1e6:.3g}M" if rate >= 1e6 else f"{rate / 1e3:.3g}k" if rate >= 1e3 else f"{rate:.3g}"


def _bench_table(title: str, columns: list[str], left: tuple[str, ...] = ("path",)) -> Table:
    """Compact tables that fit 80 columns (a narrow terminal); figures are never cut, a
    long path name folds instead."""
    from rich.table import Table
    from rich import box

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 0))
    for col in columns:
        folds = col in left
        table.add_column(col, justify="left" if folds else "right", no_wrap=not folds, overflow="fold",
                         min_width=12 if col == "path" else None)
    return table


def bench_table(report, out) -> None:
    """The report as Rich tables on stdout."""
    from rich.markup import escape

    from onnxtax.bench import EAGER, HARNESS

    s = report.settings
    threads = "runtime defaults" if s["threads"] is None else f"{s['threads']}"
    out.print(f"[bold]{escape(Path(report.onnx).name)}[/] vs [bold]{escape(report.spec or 'no PyTorch model')}"
                  f"[/]  threads {threads}, ORT opt level {s['opt_level']}, batch axis {s['batch_axis'] or '-'}, "
                  f"inputs from {report.input_source}", highlight=False)
    overhead = report.harness_overhead_ms()
    out.print(f"timer perf_counter_ns, {s['rounds']} interleaved rounds, >= {s['min_time_s']:g} s per path; "
                  f"harness overhead p50 {fmt_ms(overhead.get('p50'))}, p99 {fmt_ms(overhead.get('p99'))} "
                  "(included in every figure)", highlight=False, style="dim")
    # min and mean are in the JSON: the table fits 80 columns
    table = _bench_table("latency per call", ["batch", "path", "calls", "p50", "p90", "p99", "max", "samples/s",
                                        "eager/ORT"])
    for b in report.batches:
        for i, path in enumerate(p for p in b.latency if p != HARNESS):
            st = b.latency[path]
            speed = b.speedup(path) if path != EAGER else None
            table.add_row(str(b.batch_size) if i == 0 else "", escape(path), f"{st.iterations:,}", fmt_ms(st.p50_ms),
                          fmt_ms(st.p90_ms), fmt_ms(st.p99_ms), fmt_ms(st.max_ms),
                          _fmt_rate(b.throughput(path)), f"[bold]{speed:.2f}x[/]" if speed is not None else "",
                          end_section=(i == len(b.latency) - 2))
    out.print(table)
    calls = {p.id: sorted({b.call_path.get(p.id, p.call) for b in report.batches} or {p.call}) for p in report.paths}
    out.print("call path: " + "; ".join(f"{escape(pid)} {'/'.join(c)}" for pid, c in calls.items())
                  + "  (iobinding = run_with_iobinding with input and output OrtValues allocated once)",
                  highlight=False, style="dim")
    for p in report.paths:
        if p.placement and p.placement.get("fallback"):
            ops = ", ".join(f"{k} x{v}" for k, v in p.placement["fallback_op_types"].items())
            out.print(f"[yellow]note:[/] {escape(p.id)}: {p.placement['fallback']} of "
                          f"{p.placement['total_nodes']} nodes ran on another provider ({escape(ops)})",
                          highlight=False)
    if report.skipped_providers:
        out.print(f"skipped (not on this host): {', '.join(report.skipped_providers)}", highlight=False,
                      markup=False)
    cold_start_table(report, out)
    if report.sweep:
        sweep_table(report.sweep, out)
    if report.profile:
        profile_table(report.profile, out)
    for g in report.gates:
        mark = "[green]pass[/]" if g.passed else "[red]FAIL[/]"
        out.print(f"{mark} {g.gate}: {escape(g.message)}", highlight=False)


def cold_start_table(report, out) -> None:
    from rich.markup import escape

    if not report.cold_start:
        if report.cold_start_reason:
            out.print(f"cold start: not measured: {escape(report.cold_start_reason)}", highlight=False)
        return
    table = _bench_table(f"cold start: fresh process to first result (median of {report.cold_start_runs})",
                   ["path", "first result", "min-max", "import", "load/build", "first call", "peak RSS"])
    for path, c in report.cold_start.items():
        if not c.measured:
            table.add_row(escape(path), "[yellow]not measured[/]", "", "", "", "", "")
            continue
        fr, rss = c.first_result_s, c.peak_rss_mb
        table.add_row(escape(path), fmt_ms(fr.median * 1e3), f"{fr.min:.3g}-{fr.max:.3g} s",
                      fmt_ms(c.import_s.median * 1e3), fmt_ms(c.load_s.median * 1e3),
                      fmt_ms(c.predict_s.median * 1e3), f"{rss.median:.0f} MB")
    out.print(table)
    for path, c in report.cold_start.items():
        if not c.measured:
            out.print(f"[yellow]cold start {escape(path)} not measured:[/] {escape(c.reason or '')}",
                          highlight=False)


def sweep_table(sweep, out) -> None:
    from rich.markup import escape

    table = _bench_table("session options sweep: p50 per optimisation level x threads",
                   ["path", "opt level", "threads", *[f"batch {bs}" for bs in sweep.batch_sizes]],
                   left=("path", "opt level"))
    best = sweep.best()
    keys = list(dict.fromkeys((e.path, e.opt_level, e.threads) for e in sweep.results))
    for path, level, n in keys:
        row = [escape(path), level, str(n)]
        for bs in sweep.batch_sizes:
            e = next((e for e in sweep.results if (e.path, e.opt_level, e.threads, e.batch_size) ==
                      (path, level, n, bs)), None)
            winner = best[path]["by_batch"].get(str(bs), {})
            text = fmt_ms(e.latency.p50_ms) if e else "-"
            if e and (winner.get("opt_level"), winner.get("threads")) == (level, n):
                text = f"[bold green]{text}[/]"
            row.append(text)
        table.add_row(*row)
    out.print(table)
    for path, b in best.items():
        gain = b.get("speedup_vs_configured")
        versus = (f"; {gain:.2f}x the speed of {sweep.configured[0]}/{sweep.configured[1]} measured above"
                  if gain is not None else "")
        out.print(f"best for {escape(path)}: opt level {b['opt_level']}, {b['threads']} thread(s) "
                      f"(p50 {b['geomean_vs_best']:.2f}x the per-batch best{versus})", highlight=False)


def profile_table(profiles, out) -> None:
    from rich.markup import escape

    for prof in profiles:
        table = _bench_table(f"top operators: {escape(prof.path)}, batch {prof.batch_size}",
                       ["op type", "provider", "calls", "total", "mean", "%"], left=("op type", "provider"))
        for op in prof.top_ops:
            table.add_row(escape(op.op_type), op.provider.replace("ExecutionProvider", ""), f"{op.calls:,}",
                          f"{op.total_us:,.0f} µs", f"{op.mean_us:.2f} µs", f"{op.percent:.1f}")
        out.print(table)
        out.print(f"{prof.runs} profiled runs: {prof.run_mean_us:.1f} µs per run (the profiler's own cost "
                      f"included), {prof.node_mean_us:.1f} µs in operators; {escape(prof.file)}",
                      highlight=False, style="dim")
