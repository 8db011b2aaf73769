"""A serving benchmark's report rendered: the paths' summary (load within the SLO, latency there,
memory, cores, cold start, cost), the ratios between paths, each curve, the generator's floor,
markdown, and the PNG of latency percentiles against offered load (the `plot` extra)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from onnxtax.render.bench import fmt_ms, require_plot

if TYPE_CHECKING:
    from onnxtax.serve import ServeReport


def fmt_qps(q: float | None) -> str:
    if q is None:
        return "none"
    return f"{q / 1000:.3g}k" if q >= 1000 else f"{q:.3g}"


def fmt_cost(c: float | None) -> str:
    return "-" if c is None else f"{c:.3g}"


def _lat(ms: float | None) -> str:
    return "-" if ms is None else ("inf" if not math.isfinite(ms) else fmt_ms(ms))


def _table(title: str, columns: list[str], left: tuple[str, ...] = ("path",)):
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    for col in columns:
        table.add_column(col, justify="left" if col in left else "right", no_wrap=col not in left)
    return table


def summary_rows(report: "ServeReport") -> list[list[str]]:
    """One row per path: the figures a platform engineer decides on."""
    from onnxtax.serve.report import fmt_policy

    rows = []
    for p in report.paths:
        best = p.best
        lv = best.at_slo if best else None
        cold = p.cold_start
        check = {"reference": "reference", "passed": "passed", "failed": "FAILED", "error": "ERROR",
                 "not_run": "-"}[p.correctness.status]
        rows.append([p.id, f"{fmt_qps(p.qps_at_slo)}" if p.status == "measured" else p.status.upper(),
                     fmt_policy(best.policy) if best else "-",
                     _lat(lv.latency_ms["p50"] if lv else None), _lat(lv.latency_ms["p95"] if lv else None),
                     _lat(lv.latency_ms["p99"] if lv else None),
                     f"{lv.host_cores:.2f}" if lv and lv.host_cores is not None else "-",
                     f"{lv.cpu_ms_per_1k:.3g} ms" if lv and lv.cpu_ms_per_1k is not None else "-",
                     f"{lv.rss_mb:.0f} MB" if lv and lv.rss_mb else "-",
                     f"{cold.first_response_s.median * 1000:.0f} ms" if cold else "-",
                     f"{cold.peak_rss_mb.median:.0f} MB" if cold else "-",
                     fmt_cost(p.cost_per_1000), check])
    return rows


SUMMARY_COLUMNS = ["path", "rows/s at SLO", "policy", "p50", "p95", "p99", "cores", "CPU/1k", "RSS", "cold start",
                   "cold RSS", "$/1k", "outputs"]


def serve_table(report: "ServeReport", out) -> None:
    from rich.markup import escape

    from onnxtax.serve.report import fmt_policy

    s, c = report.settings, report.cores
    key, slo = report.slo["percentile"], report.slo["ms"]
    shapes = ", ".join(f"{k}{v}" for k, v in report.request["shapes"].items())
    out.print(f"[bold]{escape(Path(report.onnx).name)}[/] vs [bold]{escape(report.spec or '-')}[/]  "
              f"SLO {key} <= {slo:g} ms, {s['arrival']} arrivals, one request = {escape(shapes)}", highlight=False)
    where = ("generator and hosts share the only core" if c["shared"] else
             f"hosts on core(s) {','.join(map(str, c['server']))}, generator on core(s) "
             f"{','.join(map(str, c['generator']))} of {c['cpu_count']}")
    out.print(f"{where}; {s['duration_s']:g} s per level ({s['warmup_s']:g} s warm-up); latency from each "
              "request's scheduled arrival to its response", style="dim", highlight=False)
    table = _table(f"serving within the SLO ({key} <= {slo:g} ms): the best policy per path", SUMMARY_COLUMNS,
                   left=("path", "policy", "outputs"))
    for row in summary_rows(report):
        table.add_row(*map(escape, row))
    out.print(table)
    out.print("cores: the hosts' CPU time over the window; CPU/1k: their CPU time per 1,000 rows at that load "
              "(unaffected by what else runs on the machine)", style="dim", highlight=False)
    if s.get("price_per_hour"):
        out.print(f"$/1k: {s['price_per_hour']:g} per machine-hour x the hosts' share of its cores "
                  f"({len(c['server'])}/{c['cpu_count']}) / rows per hour at SLO x 1000", style="dim",
                  highlight=False)
    ratios = [r for r in report.ratios() if any(r[k] for k in ("qps_at_slo", "rss", "cold_start"))]
    if ratios:
        out.print("the tax under load: " + "; ".join(
            f"{r['a']}/{r['b']} " + ", ".join(f"{name} {r[k]:.2f}x" for k, name in
                                              (("qps_at_slo", "rows/s at SLO"), ("rss", "RSS"),
                                               ("cold_start", "cold start")) if r[k])
            for r in ratios), highlight=False)
    curves = _table("latency by offered load (every policy; * = within the SLO; others: other processes on the "
                    "hosts' cores)",
                    ["path", "policy", "offered", "achieved", "p50", "p95", "p99", "max", "batch", "cores", "others",
                     "RSS"],
                    left=("path", "policy"))
    for p in report.paths:
        for ci, curve in enumerate(p.curves):
            levels = sorted(curve.levels, key=lambda lv: lv.offered_qps)
            for li, lv in enumerate(levels):
                mark = "*" if lv.slo_met else (" (stopped)" if lv.aborted_at_s is not None else "")
                curves.add_row(p.id if ci == 0 and li == 0 else "", fmt_policy(curve.policy) if li == 0 else "",
                               f"{fmt_qps(lv.offered_qps)}{mark}", fmt_qps(lv.achieved_qps),
                               _lat(lv.latency_ms["p50"]), _lat(lv.latency_ms["p95"]), _lat(lv.latency_ms["p99"]),
                               _lat(lv.latency_ms["max"]), f"{lv.batch_mean:.1f}" if lv.batch_mean else "-",
                               f"{lv.host_cores:.2f}" if lv.host_cores is not None else "-",
                               f"{lv.other_cores:.2f}" if lv.other_cores is not None else "-",
                               f"{lv.rss_mb:.0f} MB" if lv.rss_mb else "-",
                               end_section=(li == len(levels) - 1))
    out.print(curves)
    for g in report.generator:
        idle = g["levels"][0] if g["levels"] else None
        out.print(f"generator floor ({g['id']}, a host that computes nothing, {fmt_policy(g['policy'])}): "
                  f"{fmt_qps(g['qps_at_slo'])} rows/s within the SLO"
                  + (f"; p50 {_lat(idle['p50_ms'])}, p99 {_lat(idle['p99_ms'])} at {fmt_qps(idle['offered_qps'])} "
                     "rows/s (in every figure above)" if idle else ""), style="dim", highlight=False)
    for p in report.paths:
        if p.correctness.status in ("failed", "error"):
            out.print(f"[red]{escape(p.id)}: outputs {p.correctness.status}[/]: {escape(p.correctness.message or '')}",
                      highlight=False)
    for note in report.notes:
        out.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    for g in report.gates:
        mark = "[green]pass[/]" if g.passed else "[red]FAIL[/]"
        out.print(f"{mark} {g.gate}: {escape(g.message)}", highlight=False)


def serve_markdown(report: "ServeReport") -> str:
    key, slo = report.slo["percentile"], report.slo["ms"]
    lines = [f"### serve-bench: {Path(report.onnx).name} ({key} <= {slo:g} ms)", "",
             "| " + " | ".join(SUMMARY_COLUMNS) + " |", "|" + "---|" * len(SUMMARY_COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in summary_rows(report)]
    for g in report.gates:
        lines.append(f"- {'pass' if g.passed else '**FAIL**'} {g.gate}: {g.message}")
    for f in report.failures:
        lines.append(f"- **failed**: {f}")
    return "\n".join(lines) + "\n"


def write_serve_plot(report: "ServeReport", path: str | Path) -> Path:
    """PNG: p50 (solid), p95 (dotted) and p99 (dashed) against offered load, per path at its best
    policy, the SLO as a horizontal line; log-log."""
    from onnxtax.render.text import write_figure

    require_plot()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    from onnxtax.serve.report import fmt_policy

    key, slo = report.slo["percentile"], report.slo["ms"]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for p in report.paths:
        curve = p.best or (p.curves[0] if p.curves else None)
        if curve is None:
            continue
        levels = sorted(curve.levels, key=lambda lv: lv.offered_qps)
        xs = [lv.offered_qps for lv in levels]
        cap = slo * 20  # an overloaded level's latency is unbounded: drawn at the top edge
        y = {k: [min(lv.latency_ms[k], cap) for lv in levels] for k in ("p50", "p95", "p99")}
        (line,) = ax.plot(xs, y["p50"], marker="o", label=f"{p.id} p50 ({fmt_policy(curve.policy)})")
        ax.plot(xs, y["p95"], linestyle=":", color=line.get_color(), linewidth=1, label=f"{p.id} p95")
        ax.plot(xs, y["p99"], linestyle="--", color=line.get_color(), linewidth=1, marker=".", label=f"{p.id} p99")
        if p.qps_at_slo:
            ax.axvline(p.qps_at_slo, color=line.get_color(), alpha=0.3, linewidth=4)
    ax.axhline(slo, color="red", linewidth=1, label=f"SLO {key} {slo:g} ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (rows/s, open loop)")
    ax.set_ylabel("latency from scheduled arrival (ms)")
    ax.set_title(f"{Path(report.onnx).name}: latency under load (bars: each path's load within the SLO)")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return write_figure(fig, path)
