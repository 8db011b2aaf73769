"""`onnxtax bench`: PyTorch eager vs ONNX Runtime, latency, throughput, cold start, gates."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from onnxtax.core import defaults

if TYPE_CHECKING:
    pass

from onnxtax.core.defaults import BENCH_COLD_START_RUNS as DEFAULT_COLD_START_RUNS
from onnxtax.core.defaults import BENCH_MAX_SAMPLES as MAX_SAMPLES
from onnxtax.core.defaults import BENCH_MIN_TIME as DEFAULT_MIN_TIME
from onnxtax.core.defaults import BENCH_THREADS as DEFAULT_THREADS
from onnxtax.core.defaults import BENCH_WARMUP as DEFAULT_WARMUP
from onnxtax.cli._app import (DEBUG_HELP, EXIT_CODES_HELP, app, check_files, console, json_option, print_error,
                              print_json, print_memory, progress_display, user_errors)
from onnxtax.cli.export import RANDOM_INIT_HELP, SPEC_ARG, TEXT_HELP, TRUST_HELP, hub_spec, text_files
from onnxtax.core.errors import InputSpecError

INPUT_HELP = ("NAME:DIMS[:DTYPE], one per graph input, e.g. x:batch,128. Default: the manifest beside the "
              "model, else the ONNX graph's inputs.")


@app.command(epilog=EXIT_CODES_HELP)
def bench(
    spec: Annotated[str, SPEC_ARG],
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
    data: Annotated[list[Path], typer.Option(help="A .npz of real rows keyed by input name: timed instead of random "
                                             "inputs (rows repeated up to each batch size, the other axes as "
                                             "they are). Repeatable.", show_default=False)] = [],  # noqa: B006
    text: Annotated[list[Path], typer.Option(help=TEXT_HELP.replace("used as --data is", "timed as --data is"),
                                             show_default=False)] = [],  # noqa: B006
    random_init: Annotated[bool, typer.Option("--random-init", help=RANDOM_INIT_HELP)] = False,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help=TRUST_HELP)] = False,
    json_out: Annotated[Optional[str], json_option()] = None,
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
        from onnxtax.bench import BenchOptions, parse_batch_sizes, parse_latency_gates, run_bench
        from onnxtax.core.files import check_output, write_output
        from onnxtax.core.report import jsonable
        from onnxtax.core.manifest import manifest_path_for, read_manifest, update_manifest
        from onnxtax.core.paths import PlannedFiles
        from onnxtax.render.bench import require_plot, write_plot
        from onnxtax.core.specs import parse_dim_values, parse_input_specs, parse_ranges

        from onnxtax.core.options import MAX_THREADS

        if not 0 <= threads <= MAX_THREADS:
            raise InputSpecError(f"--threads {threads} must be between 0 and {MAX_THREADS}",
                                 "0 = each runtime's own default, e.g. --threads 1")
        specs = parse_input_specs(input) or None
        sizes = parse_batch_sizes(batch_sizes) if batch_sizes is not None else None
        dims = parse_dim_values(dim, multi=True)
        gates = parse_latency_gates(max_latency_ms)
        ranges = parse_ranges(range_)
        if plot is not None:
            require_plot()
        if record:
            read_manifest(model, required=True)  # fail before measuring, not after
        options = BenchOptions(batch_sizes=sizes, dims=dims, providers=provider or None,
                               skip_unavailable=skip_unavailable, threads=threads or None, opt_level=opt_level,
                               warmup=warmup, min_time=min_time, cold_start=not no_cold_start,
                               cold_start_runs=cold_start_runs, sweep=sweep, profile_dir=profile,
                               max_latency_ms=gates, min_speedup=min_speedup, ranges=ranges, seed=seed,
                               data_files=list(data) + text_files(text))
        options.validate()
        spec = hub_spec(spec, random_init, trust_remote_code)
        # every file bench writes, checked before minutes of measuring (--record rewrites the manifest on purpose)
        files = (PlannedFiles().read_spec(spec).read_artifact(model).write(json_out, "--json")
                 .write(plot, "--plot").write(profile, "--profile", folder=True))
        for f in [*data, *text]:
            files.read(f, f"the data file {f.name}")
        check_files(files)
        if record:
            check_output(manifest_path_for(model), "--record")
        with progress_display("bench") as progress:
            report = run_bench(spec, model, specs, options, progress=progress)
    # the table first: a file that cannot be written after minutes of measuring loses nothing
    if json_stdout:
        print_json(report.to_dict())
    else:
        from onnxtax.render.bench import bench_table

        bench_table(report, console)
    with user_errors(debug):
        if json_out and not json_stdout:
            write_output(json_out, jsonable(report.to_dict()), "--json")
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
