"""`onnxtax bench`: PyTorch eager vs ONNX Runtime, latency, throughput, cold start, gates."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from onnxtax.core import defaults

if TYPE_CHECKING:
    from rich.table import Table

from onnxtax.core.defaults import BENCH_COLD_START_RUNS as DEFAULT_COLD_START_RUNS
from onnxtax.core.defaults import BENCH_MAX_SAMPLES as MAX_SAMPLES
from onnxtax.core.defaults import BENCH_MIN_TIME as DEFAULT_MIN_TIME
from onnxtax.core.defaults import BENCH_THREADS as DEFAULT_THREADS
from onnxtax.core.defaults import BENCH_WARMUP as DEFAULT_WARMUP
from onnxtax.cli._app import (DEBUG_HELP, EXIT_CODES_HELP, app, console, print_error,
                              print_json, print_memory, progress_display, user_errors)
from onnxtax.cli.export import SPEC_RUNS_CODE
from onnxtax.core.errors import InputSpecError

INPUT_HELP = ("NAME:DIMS[:DTYPE], one per graph input, e.g. x:batch,128. Default: the manifest beside the "
              "model, else the ONNX graph's inputs.")


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


@app.command(epilog=EXIT_CODES_HELP)
def bench(
    spec: Annotated[str, typer.Argument(help="The PyTorch model: path/to/file.py:NAME or package.module:NAME. "
                                        + SPEC_RUNS_CODE,
                                        show_default=False)],
    model: Annotated[Path, typer.Argument(help="The exported .onnx file.", show_default=False)],
    input: Annotated[list[str], typer.Option("--input", "-i", help=INPUT_HELP, show_default=False)] = [],  # noqa: B006
    batch_sizes: Annotated[Optional[str], typer.Option(
        help="Batch sizes to measure; default 1,8,64. The batch axis is the dynamic axis named "
             "'batch', else the first dynamic axis of the first input.", show_default=False)] = None,
    dim: Annotated[list[str], typer.Option(help="SYMBOL=VALUE for the other dynamic axes (default: their export "
                                           "size from the manifest).", show_default=False)] = [],  # noqa: B006
    provider: Annotated[list[str], typer.Option(help="Execution provider, repeatable: cpu, "
                                                "openvino:device_type=CPU, ... Default: every compute provider.",
                                                show_default=False)] = [],  # noqa: B006
    skip_unavailable: Annotated[bool, typer.Option("--skip-unavailable", help="Skip a --provider this host "
                                                   "lacks instead of failing.")] = False,
    threads: Annotated[int, typer.Option(help="Threads for torch and ORT alike (intra-op); 0 = each runtime's "
                                         "own default.")] = DEFAULT_THREADS,
    opt_level: Annotated[str, typer.Option(help="ORT graph optimisation level: disable, basic, extended, all.")
                         ] = defaults.OPT_LEVEL,
    warmup: Annotated[int, typer.Option(help="Warm-up calls per path and batch size (also calibrate blocks).")
                      ] = DEFAULT_WARMUP,
    min_time: Annotated[float, typer.Option(help="Seconds of measured calls per path and batch size (at least, "
                                            f"unless {MAX_SAMPLES:,} calls come first).")] = DEFAULT_MIN_TIME,
    sweep: Annotated[bool, typer.Option("--sweep", help="Also try every optimisation level x thread count "
                                        "(1, 2, all cores) per provider and report the best.")] = False,
    no_cold_start: Annotated[bool, typer.Option("--no-cold-start", help="Skip the fresh-process cold start "
                                                "and peak memory measurement.")] = False,
    cold_start_runs: Annotated[int, typer.Option(help="Fresh processes per path for the cold start.")
                               ] = DEFAULT_COLD_START_RUNS,
    range_: Annotated[list[str], typer.Option("--range", help="NAME=LOW:HIGH value range of an input (integers: "
                                              "high exclusive), e.g. ids=0:30522.", show_default=False)] = [],  # noqa: B006
    seed: Annotated[int, typer.Option(help="Seed of the random inputs.")] = defaults.PARITY_SEED,
    json_out: Annotated[Optional[str], typer.Option("--json", help="Write the JSON report to PATH, or '-' for "
                                                    "stdout (then no table).", show_default=False)] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Write a PNG of latency by batch size (needs matplotlib: "
                                                 "pip install 'onnxtax[plot]').", show_default=False)] = None,
    record: Annotated[bool, typer.Option("--record", help="Store the summary in the model's manifest "
                                         "(key 'benchmark').")] = False,
    max_latency_ms: Annotated[list[str], typer.Option(
        help="Gate: PERCENTILE[@BATCH]=MS (p50, p90, p99, max) that every ORT path must meet, e.g. p99=5 or "
             "p50@1=0.05; repeatable. Exit 1 when not met.", show_default=False)] = [],  # noqa: B006
    min_speedup: Annotated[Optional[float], typer.Option(
        help="Gate: eager p50 / ORT p50 must be at least this at every batch size, for every ORT path. "
             "Exit 1 when not met.", show_default=False)] = None,
    profile: Annotated[Optional[Path], typer.Option(help="Write ORT profile JSON files to DIR (a separate, "
                                                    "profiled session) and show the top operators by time.",
                                                    show_default=False)] = None,
    debug: Annotated[bool, typer.Option("--debug", help=DEBUG_HELP)] = False,
) -> None:
    """Measure the Python tax: PyTorch eager vs ONNX Runtime on each provider, latency
    percentiles and throughput per batch size, cold start and peak memory in fresh
    processes; gate on latency or speedup."""
    json_stdout = json_out == "-"
    with user_errors(debug):
        from onnxtax.bench import parse_batch_sizes, parse_latency_gates, run_bench
        from onnxtax.render.bench import require_plot, write_plot
        from onnxtax.core.files import write_output
        from onnxtax.core.manifest import read_manifest, update_manifest
        from onnxtax.core.specs import parse_dim_values, parse_input_specs, parse_ranges

        if threads < 0:
            raise InputSpecError(f"--threads {threads} must be >= 0", "0 = each runtime's own default, e.g. --threads 1")
        specs = parse_input_specs(input) or None
        sizes = parse_batch_sizes(batch_sizes) if batch_sizes is not None else None
        dims = parse_dim_values(dim, multi=True)
        gates = parse_latency_gates(max_latency_ms)
        ranges = parse_ranges(range_)
        if plot is not None:
            require_plot()
        if record:
            read_manifest(model, required=True)  # fail before measuring, not after
        _check_outputs(json_out if not json_stdout else None, plot, profile, model if record else None)
        with progress_display("bench") as progress:
            report = run_bench(spec, model, specs, batch_sizes=sizes, dims=dims, providers=provider or None,
                               skip_unavailable=skip_unavailable, threads=threads or None, opt_level=opt_level,
                               warmup=warmup, min_time=min_time, cold_start=not no_cold_start,
                               cold_start_runs=cold_start_runs, sweep=sweep, profile_dir=profile,
                               max_latency_ms=gates, min_speedup=min_speedup, ranges=ranges, seed=seed,
                               progress=progress)
    # the table first: a file that cannot be written after minutes of measuring loses nothing
    if json_stdout:
        print_json(report.to_dict())
    else:
        render(report)
    with user_errors(debug):
        if json_out and not json_stdout:
            write_output(json_out, report.to_dict(), "--json")
        if plot is not None:
            write_plot(report, plot)
        recorded = update_manifest(model, "benchmark", report.summary()) if record else None
    if not json_stdout:
        for label, path in (("json", json_out), ("plot", plot), ("recorded in", recorded)):
            if path:
                console.print(f"{label}: {path}", highlight=False, markup=False)
        print_memory(report)
    for failure in report.failures:
        print_error(failure, label="not measured")
    for gate in report.failed_gates:
        print_error(gate.message, label=f"gate failed ({gate.gate})")
    raise typer.Exit(report.exit_code)


def _check_outputs(json_path: str | None, plot: Path | None, profile: Path | None, record_model: Path | None) -> None:
    """Every file bench will write, checked before minutes of measuring."""
    from onnxtax.core.files import check_output
    from onnxtax.core.manifest import manifest_path_for

    if json_path:
        check_output(json_path, "--json")
    if plot is not None:
        check_output(plot, "--plot")
    if profile is not None:
        check_output(profile, "--profile", folder=True)
    if record_model is not None:
        check_output(manifest_path_for(record_model), "--record")


def _table(title: str, columns: list[str], left: tuple[str, ...] = ("path",)) -> Table:
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


def render(report) -> None:
    """The report as Rich tables on stdout."""
    from rich.markup import escape

    from onnxtax.bench import EAGER, HARNESS

    s = report.settings
    threads = "runtime defaults" if s["threads"] is None else f"{s['threads']}"
    console.print(f"[bold]{escape(Path(report.onnx).name)}[/] vs [bold]{escape(report.spec or 'no PyTorch model')}"
                  f"[/]  threads {threads}, ORT opt level {s['opt_level']}, batch axis {s['batch_axis'] or '-'}, "
                  f"inputs from {report.input_source}", highlight=False)
    overhead = report.harness_overhead_ms()
    console.print(f"timer perf_counter_ns, {s['rounds']} interleaved rounds, >= {s['min_time_s']:g} s per path; "
                  f"harness overhead p50 {fmt_ms(overhead.get('p50'))}, p99 {fmt_ms(overhead.get('p99'))} "
                  "(included in every figure)", highlight=False, style="dim")
    # min and mean are in the JSON: the table fits 80 columns
    table = _table("latency per call", ["batch", "path", "calls", "p50", "p90", "p99", "max", "samples/s",
                                        "eager/ORT"])
    for b in report.batches:
        for i, path in enumerate(p for p in b.latency if p != HARNESS):
            st = b.latency[path]
            speed = b.speedup(path) if path != EAGER else None
            table.add_row(str(b.batch_size) if i == 0 else "", escape(path), f"{st.iterations:,}", fmt_ms(st.p50_ms),
                          fmt_ms(st.p90_ms), fmt_ms(st.p99_ms), fmt_ms(st.max_ms),
                          _fmt_rate(b.throughput(path)), f"[bold]{speed:.2f}x[/]" if speed is not None else "",
                          end_section=(i == len(b.latency) - 2))
    console.print(table)
    calls = {p.id: sorted({b.call_path.get(p.id, p.call) for b in report.batches} or {p.call}) for p in report.paths}
    console.print("call path: " + "; ".join(f"{escape(pid)} {'/'.join(c)}" for pid, c in calls.items())
                  + "  (iobinding = run_with_iobinding with input and output OrtValues allocated once)",
                  highlight=False, style="dim")
    for p in report.paths:
        if p.placement and p.placement.get("fallback"):
            ops = ", ".join(f"{k} x{v}" for k, v in p.placement["fallback_op_types"].items())
            console.print(f"[yellow]note:[/] {escape(p.id)}: {p.placement['fallback']} of "
                          f"{p.placement['total_nodes']} nodes ran on another provider ({escape(ops)})",
                          highlight=False)
    if report.skipped_providers:
        console.print(f"skipped (not on this host): {', '.join(report.skipped_providers)}", highlight=False,
                      markup=False)
    _render_cold_start(report)
    if report.sweep:
        _render_sweep(report.sweep)
    if report.profile:
        _render_profile(report.profile)
    for g in report.gates:
        mark = "[green]pass[/]" if g.passed else "[red]FAIL[/]"
        console.print(f"{mark} {g.gate}: {escape(g.message)}", highlight=False)


def _render_cold_start(report) -> None:
    from rich.markup import escape

    if not report.cold_start:
        if report.cold_start_reason:
            console.print(f"cold start: not measured: {escape(report.cold_start_reason)}", highlight=False)
        return
    table = _table(f"cold start: fresh process to first result (median of {report.cold_start_runs})",
                   ["path", "first result", "min-max", "import", "load/build", "first call", "peak RSS"])
    for path, c in report.cold_start.items():
        if not c.measured:
            table.add_row(escape(path), "[yellow]not measured[/]", "", "", "", "", "")
            continue
        fr, rss = c.first_result_s, c.peak_rss_mb
        table.add_row(escape(path), fmt_ms(fr.median * 1e3), f"{fr.min:.3g}-{fr.max:.3g} s",
                      fmt_ms(c.import_s.median * 1e3), fmt_ms(c.load_s.median * 1e3),
                      fmt_ms(c.predict_s.median * 1e3), f"{rss.median:.0f} MB")
    console.print(table)
    for path, c in report.cold_start.items():
        if not c.measured:
            console.print(f"[yellow]cold start {escape(path)} not measured:[/] {escape(c.reason or '')}",
                          highlight=False)


def _render_sweep(sweep) -> None:
    from rich.markup import escape

    table = _table("session options sweep: p50 per optimisation level x threads",
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
    console.print(table)
    for path, b in best.items():
        gain = b.get("speedup_vs_configured")
        versus = (f"; {gain:.2f}x the speed of {sweep.configured[0]}/{sweep.configured[1]} measured above"
                  if gain is not None else "")
        console.print(f"best for {escape(path)}: opt level {b['opt_level']}, {b['threads']} thread(s) "
                      f"(p50 {b['geomean_vs_best']:.2f}x the per-batch best{versus})", highlight=False)


def _render_profile(profiles) -> None:
    from rich.markup import escape

    for prof in profiles:
        table = _table(f"top operators: {escape(prof.path)}, batch {prof.batch_size}",
                       ["op type", "provider", "calls", "total", "mean", "%"], left=("op type", "provider"))
        for op in prof.top_ops:
            table.add_row(escape(op.op_type), op.provider.replace("ExecutionProvider", ""), f"{op.calls:,}",
                          f"{op.total_us:,.0f} µs", f"{op.mean_us:.2f} µs", f"{op.percent:.1f}")
        console.print(table)
        console.print(f"{prof.runs} profiled runs: {prof.run_mean_us:.1f} µs per run (the profiler's own cost "
                      f"included), {prof.node_mean_us:.1f} µs in operators; {escape(prof.file)}",
                      highlight=False, style="dim")
