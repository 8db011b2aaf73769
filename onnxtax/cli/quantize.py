"""`onnxtax quantize`: INT8 approved only when every data segment stays within its budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from onnxtax.core import defaults
from onnxtax.cli._app import (DEBUG_HELP, EXIT_CODES_HELP, app, console, err_console, print_json, print_memory,
                              progress_display, user_errors)
from onnxtax.cli.export import INPUT_HELP, SPEC_ARG

_NO = []  # typer's list defaults


@app.command(epilog=EXIT_CODES_HELP)
def quantize(
    spec: Annotated[str, SPEC_ARG],
    onnx_model: Annotated[Path, typer.Argument(help="The FP32 .onnx file (from `onnxtax export`).",
                                               show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the INT8 .onnx; its manifest goes "
                                         "beside it. Written only when every budget holds.", show_default=False)],
    eval_: Annotated[list[str], typer.Option("--eval", help="NAME=FILE.npz: one data segment (arrays keyed by input "
                                             "name, rows on axis 0). Repeatable; FILE.npz alone is named by its "
                                             "stem or split by --segment-key.", show_default=False)] = _NO,
    budget: Annotated[list[str], typer.Option(help="[SEGMENT:]METRIC=VALUE, e.g. agreement@0.5=0.97, "
                                              "tail:agreement@0.5=0.95, top1=0.99, top5=1, cosine=0.995, "
                                              "max_abs=0.05, mean_abs=0.01, accuracy_drop=1.0 (points). Without "
                                              "SEGMENT: every segment. Repeatable.", show_default=False)] = _NO,
    mode: Annotated[str, typer.Option(help="dynamic (activation scales per batch), static (calibrated ranges), or "
                                      "auto (both; the fastest that passes).")] = defaults.QUANTIZE_MODE,
    calibration: Annotated[list[Path], typer.Option(help="A .npz of representative inputs for static "
                                                    "quantization (keep it apart from the --eval data). "
                                                    "Repeatable.", show_default=False)] = _NO,
    calibration_method: Annotated[str, typer.Option(help="minmax, entropy, percentile or distribution.")
                                  ] = defaults.QUANTIZE_CALIBRATION_METHOD,
    quant_format: Annotated[str, typer.Option("--format", help="Static builds: qdq (Quantize/DequantizeLinear "
                                              "pairs, ORT's recommended) or qoperator (QLinear* ops).")
                            ] = defaults.QUANTIZE_FORMAT,
    per_channel: Annotated[bool, typer.Option(help="Quantize weights per output channel.")] = False,
    labels: Annotated[str | None, typer.Option(help="Name of a label array in the --eval files: adds accuracy and "
                                               "accuracy_drop per segment.", show_default=False)] = None,
    segment_key: Annotated[str | None, typer.Option(help="Name of an array in the --eval files whose values split "
                                                    "the rows into segments (e.g. region).",
                                                    show_default=False)] = None,
    metric_output: Annotated[str | None, typer.Option(help="The ONNX output the metrics are computed on "
                                                      "(default: the first).", show_default=False)] = None,
    exclude: Annotated[list[str], typer.Option(help="Keep nodes in FP32: a glob over node names or PyTorch module "
                                               "paths (net.0, encoder.layer.*.attention). Repeatable.",
                                               show_default=False)] = _NO,
    auto_exclude: Annotated[bool, typer.Option(help="When a budget fails, keep the node adding the most error in "
                                               "FP32 and re-quantize, until the budgets hold or --max-exclude.")
                            ] = False,
    max_exclude: Annotated[int, typer.Option(help="Most nodes --auto-exclude keeps in FP32.")
                           ] = defaults.QUANTIZE_MAX_EXCLUDE,
    input: Annotated[list[str], typer.Option("--input", "-i", help=INPUT_HELP + " Default: the manifest beside the "
                                             "model, else the graph's inputs.", show_default=False)] = _NO,
    provider: Annotated[list[str], typer.Option("--provider", "-p", help="Where metrics and latency are measured "
                                                "(cpu, openvino:device_type=CPU, ...). Repeatable. Default: every "
                                                "compute provider on this host.", show_default=False)] = _NO,
    batch_size: Annotated[int, typer.Option(help="Rows per batch of the batched evaluation (segments mixed, as "
                                            "a server batches requests).")] = defaults.QUANTIZE_BATCH_SIZE,
    bench_batch_sizes: Annotated[str, typer.Option(help="Batch sizes of the FP32 vs INT8 latency "
                                                   "measurement.")
                                 ] = ",".join(map(str, defaults.BENCH_BATCH_SIZES)),
    bench_min_time: Annotated[float, typer.Option(help="Seconds of timed calls per build and batch size.")
                              ] = defaults.QUANTIZE_BENCH_MIN_TIME,
    min_speedup: Annotated[float | None, typer.Option(help="Also require FP32 p50 / INT8 p50 >= X at every "
                                                      "--bench-batch-sizes and provider (a speed gate; timings on "
                                                      "shared runners are noisy).", show_default=False)] = None,
    preprocess: Annotated[bool, typer.Option(help="Run ORT's quant_pre_process (shape inference, graph "
                                             "optimisation) first.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of the batch mixing.")] = 0,
    json_out: Annotated[str | None, typer.Option("--json", help="Write the report as JSON to PATH; '-' prints it "
                                                 "on stdout.", show_default=False, metavar="PATH")] = None,
    debug: Annotated[bool, typer.Option("--debug", help=DEBUG_HELP)] = False,
) -> None:
    """Quantize MODEL.onnx to INT8 and write it only if every data segment stays within every budget
    against the FP32 eager model, rows run one at a time and in batches. Shows what an aggregate
    gate would have said, which nodes were kept in FP32 (with their PyTorch modules), and FP32 vs
    INT8 size and latency."""
    json_stdout = json_out == "-"
    with user_errors(debug):
        from onnxtax.bench import parse_batch_sizes
        from onnxtax.quantize import quantize_model

        sizes = parse_batch_sizes(bench_batch_sizes)
        _check_json_path(json_out)
        with progress_display("quantize") as progress:
            report = quantize_model(spec, onnx_model, output, evals=eval_, budgets=budget, inputs=input or None,
                                    mode=mode, calibration=calibration, calibration_method=calibration_method,
                                    quant_format=quant_format, per_channel=per_channel, labels=labels,
                                    segment_key=segment_key, output_name=metric_output, exclude=exclude,
                                    auto_exclude=auto_exclude, max_exclude=max_exclude, providers=provider or None,
                                    batch_size=batch_size, bench_batch_sizes=sizes, bench_min_time=bench_min_time,
                                    min_speedup=min_speedup, preprocess=preprocess, seed=seed, progress=progress)
    if json_stdout:
        print_json(report.to_dict())
    else:
        render(report)
    verdict(report, err_console if json_stdout else console)
    print_memory(report, err_console if json_stdout else console)
    with user_errors(debug):
        _write_json(report, json_out)
    raise typer.Exit(report.exit_code)


def is_quantized(onnx_model: Path) -> bool:
    """Whether the manifest beside the model records an `onnxtax quantize` approval."""
    from onnxtax.core.errors import OnnxtaxError
    from onnxtax.core.manifest import read_manifest

    try:
        manifest = read_manifest(onnx_model, required=False)
    except OnnxtaxError:
        return False  # parity reports the unreadable manifest its own way
    return isinstance((manifest or {}).get("quantization"), dict)


def recheck(spec: str, onnx_model: Path, provider: list[str], json_out: str | None, debug: bool) -> None:
    """`onnxtax parity` on an INT8 artifact: its recorded segments against its recorded budgets."""
    json_stdout = json_out == "-"
    with user_errors(debug):
        from onnxtax.quantize import check_quantized

        _check_json_path(json_out)
        with progress_display("parity (INT8 budgets)") as progress:
            report = check_quantized(spec, onnx_model, providers=provider or None, progress=progress)
    if json_stdout:
        print_json(report.to_dict())
    else:
        (err_console if json_stdout else console).print(
            "[dim]a quantized artifact: its recorded segments are checked against its recorded budgets "
            "(FP32 tolerances do not apply)[/]", highlight=False)
        render(report)
    verdict(report, err_console if json_stdout else console)
    print_memory(report, err_console if json_stdout else console)
    with user_errors(debug):
        _write_json(report, json_out)
    raise typer.Exit(report.exit_code)


def _check_json_path(json_out: str | None) -> None:
    """A --json path that cannot be written is refused before minutes of quantizing, not after."""
    from onnxtax.core.files import check_output

    if json_out and json_out != "-":
        check_output(json_out, "--json")


def _write_json(report: Any, json_out: str | None) -> None:
    """After the table: through the one output writer (an OS error is one line, exit 2)."""
    from onnxtax.core.files import write_output
    from onnxtax.core.report import jsonable

    if json_out and json_out != "-":
        write_output(json_out, jsonable(report.to_dict()), "--json")


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


def render(report: Any, out=None) -> None:
    """Per segment x metric: FP32 ORT, INT8 one row at a time, INT8 batched, budget, verdict; then the
    nodes kept in FP32, the batch dependence, size and latency."""
    from rich.markup import escape
    from rich.table import Table

    out = out or console
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
                      f"(max diff {dep['max_abs']:.3g}), {dep['decisions_changed']} decision(s) change",
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
        out.print(f"size: {size['fp32_bytes'] / 1024:.1f} KiB FP32 -> {size['int8_bytes'] / 1024:.1f} KiB INT8 "
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


def verdict(report: Any, out) -> None:
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
