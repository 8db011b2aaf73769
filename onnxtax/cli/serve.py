"""`onnxtax serve-bench`: the Python tax under load: eager PyTorch, ONNX Runtime in Python and in Node.js,
each served with a micro-batcher under open-loop load; the load each sustains within a latency SLO."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from onnxtax.core import defaults
from onnxtax.cli._app import (DEBUG_HELP, NOISE_FACTOR_HELP, EXIT_CODES_HELP, app, check_files, console, json_option, print_error,
                              print_json, progress_display, user_errors)
from onnxtax.cli.export import SPEC_RUNS_CODE

INPUT_HELP = ("NAME:DIMS[:DTYPE], one per graph input, e.g. x:batch,128. Default: the manifest beside the "
              "model, else the ONNX graph's inputs.")
NODE_DIR_HELP = ("Where onnxruntime-node is installed from npm, one folder per release. Default: $ONNXTAX_NODE_DIR, "
                 "else ~/.cache/onnxtax/node.")


@app.command("serve-bench", epilog=EXIT_CODES_HELP)
def serve_bench(
    spec: Annotated[str, typer.Argument(help="The PyTorch model: path/to/file.py:NAME or package.module:NAME. "
                                        + SPEC_RUNS_CODE, show_default=False)],
    model: Annotated[Path, typer.Argument(help="The exported .onnx file.", show_default=False)],
    input: Annotated[list[str], typer.Option("--input", "-i", help=INPUT_HELP, show_default=False)] = [],  # noqa: B006
    paths: Annotated[str, typer.Option(help="Paths to serve: eager (PyTorch in Python), ort (ONNX Runtime in "
                                       "Python), node (ONNX Runtime in Node.js, no Python).")] = "eager,ort,node",
    slo: Annotated[str, typer.Option(help="Latency objective, PERCENTILE=LATENCY (p50, p90, p95, p99, p99.9; ms, s "
                                     "or us): the load each path sustains within it is the result.")] = "p99=20ms",
    max_batch: Annotated[str, typer.Option(help="Micro-batcher: largest batch, comma-separated for a grid.")] = "1,32",
    max_wait_ms: Annotated[str, typer.Option(help="Micro-batcher: longest the oldest queued request waits for a "
                                             "fuller batch (0: take what is queued); comma-separated for a grid.")
                           ] = "2",
    threads: Annotated[str, typer.Option(help="Batches in flight per host process (Python worker threads; Node.js "
                                         "concurrent session.run calls); comma-separated for a grid.")] = "1",
    workers: Annotated[int, typer.Option(help="eager: host processes, each with its own copy of the model "
                                         "(requests spread round-robin); their memory is summed.")] = 1,
    intra_op_threads: Annotated[int, typer.Option(help="Threads inside one model call (torch and ONNX Runtime "
                                                  "alike).")] = 1,
    arrival: Annotated[str, typer.Option(help="Open-loop arrivals: poisson or constant.")] = "poisson",
    rates: Annotated[Optional[str], typer.Option(help="Offered loads to measure, rows/s, e.g. 1000,5000 (default: a "
                                                 "ramp that finds the load within the SLO).", show_default=False)
                     ] = None,
    start_rate: Annotated[float, typer.Option(help="Ramp: first offered load (rows/s).")] = 200.0,
    growth: Annotated[float, typer.Option(help="Ramp: factor between levels until the SLO is missed.")] = 2.0,
    refine: Annotated[int, typer.Option(help="Ramp: bisections between the last load that met the SLO and the "
                                        "first that missed it.")] = 3,
    max_levels: Annotated[int, typer.Option(help="Ramp: most levels per path and policy.")] = 24,
    duration: Annotated[float, typer.Option(help="Seconds of arrivals per level.")] = 2.0,
    warmup: Annotated[float, typer.Option(help="Seconds at the start of each level not counted.")] = 0.3,
    cold_start_runs: Annotated[int, typer.Option(help="Fresh host processes per path, each timed to its first "
                                                 "response (0: none).")] = 3,
    no_generator_floor: Annotated[bool, typer.Option("--no-generator-floor", help="Skip measuring the generator "
                                                     "with a host that computes nothing.")] = False,
    server_cores: Annotated[Optional[int], typer.Option(help="Cores the hosts are pinned to (default: all but the "
                                                        "generator's one).", show_default=False)] = None,
    price_per_hour: Annotated[Optional[float], typer.Option(help="Price of one hour of this machine: adds the cost "
                                                            "of 1,000 predictions at each path's load within the "
                                                            "SLO (the hosts' share of the cores).",
                                                            show_default=False)] = None,
    min_qps_at_slo: Annotated[list[str], typer.Option(help="Gate: [PATH=]ROWS_PER_S every path (or PATH) must "
                                                      "sustain within the SLO; repeatable. Exit 1 when not met.",
                                                      show_default=False)] = [],  # noqa: B006
    max_p99_ms: Annotated[list[str], typer.Option(help="Gate: [PATH=]MS[@LOAD]: p99 at that offered load (best "
                                                  "policy), else at the path's load within the SLO; repeatable.",
                                                  show_default=False)] = [],  # noqa: B006
    dim: Annotated[list[str], typer.Option(help="SYMBOL=VALUE: size of another dynamic axis in every request "
                                           "(default: its export size).", show_default=False)] = [],  # noqa: B006
    range_: Annotated[list[str], typer.Option("--range", help="NAME=LOW:HIGH value range of an input (integers: "
                                              "HIGH exclusive).", show_default=False)] = [],  # noqa: B006
    samples: Annotated[int, typer.Option(help="Output check: random samples per parity shape.")
                       ] = defaults.PARITY_SAMPLES,
    data: Annotated[list[Path], typer.Option(help="Output check: a .npz of real inputs. Repeatable.",
                                             show_default=False)] = [],  # noqa: B006
    rtol: Annotated[float, typer.Option(help="Output check: relative tolerance (parity's rule).")
                    ] = defaults.PARITY_RTOL,
    atol: Annotated[float, typer.Option(help="Output check: absolute tolerance.")] = defaults.PARITY_ATOL,
    noise_factor: Annotated[Optional[float], typer.Option(help="Output check: " + NOISE_FACTOR_HELP,
                                                          show_default=False)] = None,
    tolerance: Annotated[list[str], typer.Option(help="Output check: OUTPUT=RTOL:ATOL for one output.",
                                                 show_default=False)] = [],  # noqa: B006
    seed: Annotated[int, typer.Option(help="Seed of the requests, the arrivals and the check's samples.")
                    ] = defaults.PARITY_SEED,
    opt_level: Annotated[str, typer.Option(help="ONNX Runtime graph optimisation: disable, basic, extended, all.")
                         ] = defaults.OPT_LEVEL,
    node_ort: Annotated[str, typer.Option(help="onnxruntime-node release from npm.")] = "1.30.0",
    node_dir: Annotated[Optional[Path], typer.Option(help=NODE_DIR_HELP, show_default=False)] = None,
    node: Annotated[Optional[str], typer.Option(help="The node executable (default: $ONNXTAX_NODE, else node on "
                                                "PATH).", show_default=False)] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Never run npm: onnxruntime-node must be in the cache "
                                          "(else exit 2).")] = False,
    json_out: Annotated[Optional[str], json_option()] = None,
    markdown: Annotated[Optional[Path], typer.Option(help="Write the summary table as markdown.", show_default=False,
                                                     metavar="PATH")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Write a PNG of latency percentiles against offered load "
                                                 "(needs matplotlib: pip install 'onnxtax[plot]').",
                                                 show_default=False)] = None,
    debug: Annotated[bool, typer.Option("--debug", help=DEBUG_HELP)] = False,
) -> None:
    """Serve the model under open-loop load on each path (eager PyTorch, ONNX Runtime in
    Python, ONNX Runtime in Node.js) with a micro-batching policy, and report the load each
    sustains within a latency SLO, its latency percentiles, memory, cores, cold start and cost;
    check every host's outputs against the eager model; gate on load or p99."""
    json_stdout = json_out == "-"
    with user_errors(debug):
        from onnxtax.core.paths import PlannedFiles
        from onnxtax.core.specs import parse_dim_values, parse_input_specs, parse_ranges
        from onnxtax.parity.options import parse_tolerances
        from onnxtax.render.bench import require_plot
        from onnxtax.serve import ServeOptions, parse_number_list, parse_path_values, run_serve_bench

        dims = {k: v[0] for k, v in parse_dim_values(dim).items()}
        options = ServeOptions(
            paths=[p.strip() for p in paths.split(",") if p.strip()], slo=slo,
            max_batch=parse_number_list(max_batch, "--max-batch", integer=True),
            max_wait_ms=parse_number_list(max_wait_ms, "--max-wait-ms", zero=True),
            threads=parse_number_list(threads, "--threads", integer=True), workers=workers,
            intra_op_threads=intra_op_threads, arrival=arrival,
            rates=parse_number_list(rates, "--rates") if rates is not None else None, start_rate=start_rate,
            growth=growth, refine=refine, max_levels=max_levels, duration_s=duration, warmup_s=warmup,
            cold_start_runs=cold_start_runs, generator_floor=not no_generator_floor, request_dims=dims,
            server_cores=server_cores, price_per_hour=price_per_hour,
            min_qps_at_slo=parse_path_values(min_qps_at_slo, "--min-qps-at-slo", "5000 or node=5000"),
            max_p99_ms=parse_path_values(max_p99_ms, "--max-p99-ms", "5, 5@1000 or ort=5@1000", at=True),
            ranges=parse_ranges(range_), samples=samples, data_files=list(data), rtol=rtol, atol=atol,
            noise_factor=noise_factor,
            tolerances=parse_tolerances(tolerance), seed=seed, opt_level=opt_level, node_ort=node_ort,
            node_dir=node_dir, node=node, offline=offline)
        options.validate()
        specs = parse_input_specs(input) or None
        if plot is not None:
            require_plot()
        files = PlannedFiles().read_spec(spec).read_artifact(model)
        for path in data:
            files.read(path, "--data")
        check_files(files.write(json_out, "--json").write(markdown, "--markdown").write(plot, "--plot"))
        with progress_display("serve-bench") as progress:
            report = run_serve_bench(spec, model, specs, options, progress=progress)
    if json_stdout:
        print_json(report.to_dict())
    else:
        from onnxtax.render.serve import serve_table

        serve_table(report, console)
    with user_errors(debug):
        from onnxtax.core.files import write_output
        from onnxtax.core.report import jsonable
        from onnxtax.render.serve import serve_markdown, write_serve_plot

        if json_out and not json_stdout:
            write_output(json_out, jsonable(report.to_dict()), "--json")
        if markdown is not None:
            write_output(markdown, serve_markdown(report), "--markdown")
        if plot is not None:
            write_serve_plot(report, plot)
    if not json_stdout:
        for label, path in (("json", json_out), ("markdown", markdown), ("plot", plot)):
            if path:
                console.print(f"{label}: {path}", highlight=False, markup=False)
    for failure in report.failures:
        print_error(failure, label="check failed")
    for gate in report.failed_gates:
        print_error(gate.message, label=f"gate failed ({gate.gate})")
    raise typer.Exit(report.exit_code)
