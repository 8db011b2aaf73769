"""A quantization rendered: every build tried, the table per segment and metric, the nodes kept in
FP32, size and latency, the verdict."""

from __future__ import annotations

from typing import Any

from onnxtax.core.report import format_size


def _v(v: float | None, metric: str = "") -> str:
    if v is None:
        return "-"
    if metric.startswith(("agreement", "top")) or metric == "accuracy":
        return f"{100 * v:.2f}%"
    if metric == "cosine":
        return f"{v:.5f}"
    return f"{v:.3g}"


def _us(ms: float) -> str:
    return f"{ms * 1000:.3g} µs" if ms < 1 else f"{ms:.3g} ms"


def quantize_table(report: Any, out) -> None:
    """Per segment x metric: FP32 ORT, INT8 one row at a time, INT8 batched, budget, quantize_verdict; then the
    nodes kept in FP32, the batch dependence, size and latency."""
    from rich.markup import escape
    from rich.table import Table

    best = report.best
    src = report.source
    out.print(f"[bold]quantize[/] {escape(src['onnx'])} vs {escape(src.get('spec') or src['class_name'])} eager, "
              f"output '{escape(report.output_name)}'", highlight=False, soft_wrap=True)
    for c in report.candidates:
        mark = "[green]pass[/]" if c.passed else "[bold red]FAIL[/]"
        chosen = " [bold](chosen)[/]" if best is c and report.passed else ""
        detail = f": {escape(c.error)}" if c.error else (
            f", {len(c.evaluation.failing)} budget check(s) failed" if c.evaluation and c.evaluation.failing else
            f", slower than --min-speedup at {len(c.speed_failures)} batch size(s)" if c.speed_failures else "")
        out.print(f"  {mark} {escape(c.label)}{chosen}{detail}", highlight=False, soft_wrap=True)
    if best is None or best.evaluation is None:
        return
    fp32 = {(s.provider, s.segment): s for s in (report.fp32.segments + report.fp32.aggregate)} if report.fp32 else {}
    table = Table(title=f"{best.label} vs FP32 eager, per segment", title_justify="left", header_style="bold")
    for col, justify in (("provider", "left"), ("segment", "left"), ("rows", "right"), ("metric", "left"),
                         ("ORT FP32", "right"), ("INT8 1 row", "right"), ("INT8 batched", "right"),
                         ("budget", "left"), ("result", "left")):
        table.add_column(col, justify=justify, no_wrap=col in ("segment", "metric", "result"))
    ev = best.evaluation
    by_provider = [s for p in dict.fromkeys(x.provider for x in ev.segments)
                   for s in ev.segments + ev.aggregate if s.provider == p]
    for seg in by_provider:
        checks = {c.metric: c for c in seg.checks}
        agg = seg.segment == "(aggregate)"
        shown = list(checks) if checks else [m for m in seg.metrics if m in _display_metrics(report)]
        if agg:
            shown = [m for m in dict.fromkeys(b.metric for b in report.budgets) if m in seg.metrics]
        for i, metric in enumerate(shown):
            vals = seg.metrics.get(metric, {})
            ref = fp32.get((seg.provider, seg.segment))
            chk = checks.get(metric)
            result = "" if chk is None else ("[green]pass[/]" if chk.passed else "[bold red]FAIL[/]")
            budget = chk and f"{'>=' if chk.direction == 'min' else '<='} {_v(chk.limit, metric)}" or ""
            if agg:
                general = next((b for b in report.budgets if b.segment is None and b.metric == metric), None)
                if general is not None:
                    budget = f"({'>=' if general.higher_is_better else '<='} {_v(general.limit, metric)})"
                    result = "[dim]would pass[/]" if general.holds(vals.get("value")) else "[dim]would fail[/]"
            table.add_row(seg.provider if i == 0 else "", escape(seg.segment) if i == 0 else "",
                          str(seg.rows) if i == 0 else "", metric,
                          _v(ref.value(metric), metric) if ref else "-", _v(vals.get("row"), metric),
                          _v(vals.get("batch"), metric), budget, result,
                          style="dim" if agg else None)
        table.add_section()
    out.print(table)
    for seg in ev.segments:
        dep = seg.batch_dependence
        if dep and dep["rows_changed"]:
            out.print(f"[yellow]batch dependence[/] {escape(seg.provider)} {escape(seg.segment)}: "
                      f"{dep['rows_changed']} of {seg.rows} rows give another output in a batch than alone "
                      f"(max diff {dep['max_abs']:.3g})" + (f", {dep['decisions_changed']} decision(s) change"
                                                             if dep.get("decisions_changed") is not None else ""),
                      highlight=False, soft_wrap=True)
    if best.excluded:
        ex = Table(title="kept in FP32", title_justify="left", header_style="bold")
        batches = sorted({b for e in best.excluded for b in (e.cost_us or {})})
        for col in ("node", "op", "PyTorch module", "source", "why", "added error",
                    *[f"cost @{b}" for b in batches]):
            ex.add_column(col)
        for e in best.excluded:
            o = e.origin
            module = "-" if o.module is None else (o.module or "(root)") + (f" ({o.module_class})" if o.module_class
                                                                              else "")
            ex.add_row(escape(o.name), o.op_type, escape(module), escape(o.source or "-"), e.reason,
                       "-" if e.added_error is None else f"{e.added_error:.3g}",
                       *[f"{(e.cost_us or {}).get(b, 0):+.3g} µs" if e.cost_us and b in e.cost_us else "-"
                         for b in batches])
        out.print(ex)
        if best.exclusion_cost_us:
            costs = ", ".join(f"{v:+.3g} µs at batch {b}" for b, v in sorted(best.exclusion_cost_us.items()))
            out.print(f"keeping these {len(best.excluded)} nodes in FP32 costs {costs} (p50, vs none kept)",
                      highlight=False, soft_wrap=True)
    size = report.size
    if size["int8_bytes"]:
        out.print(f"size: {format_size(size['fp32_bytes'])} FP32 -> {format_size(size['int8_bytes'])} INT8 "
                  f"({size['ratio']:.2f}x smaller)", highlight=False)
    if best.latency:
        lat = Table(title="latency, one call at a time (bench's harness, p50)", title_justify="left",
                    header_style="bold", box=None)
        for col in ("provider", "batch", "FP32 p50", "INT8 p50", "INT8 p99", "speedup", "INT8 samples/s"):
            lat.add_column(col, justify="left" if col == "provider" else "right")
        for row in best.latency:
            sp = row.speedup
            lat.add_row(row.provider, str(row.batch_size), _us(row.fp32.p50_ms), _us(row.int8.p50_ms),
                        _us(row.int8.p99_ms), f"[{'green' if sp >= 1 else 'yellow'}]{sp:.2f}x[/]",
                        f"{row.batch_size / (row.int8.mean_ms / 1e3):,.0f}")
        out.print(lat)
    for note in report.notes:
        out.print(f"[dim]note: {escape(note)}[/]", highlight=False, soft_wrap=True)


def _display_metrics(report: Any) -> set[str]:
    return {b.metric for b in report.budgets}


def quantize_verdict(report: Any, out) -> None:
    from rich.markup import escape

    if report.settings.get("mode") == "recheck":
        state = "[bold green]parity passed[/]" if report.passed else "[bold red]parity FAILED[/]"
        out.print(f"{state}: {escape(report.output)} on {len(report.segments)} recorded segment(s) x "
                  f"{len(report.budgets)} budget(s)", highlight=False, soft_wrap=True)
        for line in report.failures[:12]:
            out.print(f"  - {escape(line)}", highlight=False, soft_wrap=True)
        return
    if report.passed:
        best = report.best
        n_seg = len(report.segments)
        out.print(f"[bold green]quantize approved[/]: {escape(best.label)}; {n_seg} segment(s) within "
                  f"{len(report.budgets)} budget(s) on {', '.join(report.settings.get('providers') or [])}"
                  + (f"; wrote {escape(report.output)} and its manifest" if report.written else ""),
                  highlight=False, soft_wrap=True)
        return
    out.print("[bold red]quantize REFUSED[/]: no INT8 build met every budget on every segment", highlight=False)
    for line in report.failures[:12]:
        out.print(f"  - {escape(line)}", highlight=False, soft_wrap=True)
    if len(report.failures) > 12:
        out.print(f"  ... and {len(report.failures) - 12} more (--json has them all)")
    out.print(f"  nothing was written to {escape(report.output)}", highlight=False)
