"""`onnxtax runtimes`: the artifact on each onnxruntime release the fleet runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from onnxtax.core import defaults
from onnxtax.cli._app import (DEBUG_HELP, NOISE_FACTOR_HELP, EXIT_CODES_HELP, app, check_files, console, err_console, json_option,
                              print_json, print_memory, progress_display, user_errors)
from onnxtax.cli.export import INPUT_HELP, RANDOM_INIT_HELP, TEXT_HELP, TRUST_HELP, hub_spec, text_files
from onnxtax.render.runtimes import runtimes_table, runtimes_verdict
from onnxtax.core.errors import EXIT_OK

ORT_HELP = ("onnxruntime releases, exact (1.16.3), comma-separated or repeated. Each gets a cached virtualenv with "
            "only that release and a numpy it supports, built on first use.")
CACHE_HELP = ("Where the per-release virtualenvs live. Default: $ONNXTAX_RUNTIMES_DIR, else [runtimes] cache_dir, "
              "else ~/.cache/onnxtax/runtimes.")
OFFLINE_HELP = "Never build a virtualenv: a release missing from the cache is an error (exit 2)."


@app.command(epilog=EXIT_CODES_HELP)
def runtimes(
    onnx_model: Annotated[Path, typer.Argument(help="The .onnx file (its manifest, when beside it, gives the "
                                               "inputs).", show_default=False)],
    spec: Annotated[Optional[str], typer.Argument(help="The PyTorch model it came from (path/to/file.py:NAME): "
                                                  "the reference. Without it the installed onnxruntime on CPU is "
                                                  "the reference.", show_default=False)] = None,
    ort: Annotated[list[str], typer.Option("--ort", help=ORT_HELP, show_default=False)] = [],  # noqa: B006
    provider: Annotated[list[str], typer.Option("--provider", "-p", help="Execution provider in each release (cpu, "
                                                "openvino:device_type=CPU, ...). Repeatable. Default: cpu. One the "
                                                "release's package lacks is reported as not in package.",
                                                show_default=False)] = [],  # noqa: B006
    input: Annotated[list[str], typer.Option("--input", "-i", help=INPUT_HELP + " Default: the manifest, else the "
                                             "graph's inputs.", show_default=False)] = [],  # noqa: B006
    dim: Annotated[list[str], typer.Option(help="SYMBOL=V1,V2,...: sizes of a dynamic axis (default as parity: 1, "
                                           "an even and an odd size).", show_default=False)] = [],  # noqa: B006
    samples: Annotated[int, typer.Option(help="Random samples per shape (seeded, as parity).")] = defaults.PARITY_SAMPLES,
    seed: Annotated[int, typer.Option(help="Seed of the random samples.")] = defaults.PARITY_SEED,
    range_: Annotated[list[str], typer.Option("--range", help="NAME=LOW:HIGH value range of an input (integers: "
                                              "HIGH exclusive).", show_default=False)] = [],  # noqa: B006
    data: Annotated[list[Path], typer.Option(help="A .npz of real inputs keyed by input name. Repeatable.",
                                             show_default=False)] = [],  # noqa: B006
    text: Annotated[list[Path], typer.Option(help=TEXT_HELP, show_default=False)] = [],  # noqa: B006
    random_init: Annotated[bool, typer.Option("--random-init", help=RANDOM_INIT_HELP)] = False,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help=TRUST_HELP)] = False,
    rtol: Annotated[float, typer.Option(help="Relative tolerance (parity's criterion).")] = defaults.PARITY_RTOL,
    atol: Annotated[float, typer.Option(help="Absolute tolerance.")] = defaults.PARITY_ATOL,
    noise_factor: Annotated[Optional[float], typer.Option(help=NOISE_FACTOR_HELP + " Needs SPEC.",
                                                          show_default=False)] = None,
    tolerance: Annotated[list[str], typer.Option(help="OUTPUT=RTOL:ATOL for one output.",
                                                 show_default=False)] = [],  # noqa: B006
    min_cosine: Annotated[float, typer.Option(help="Similarity gate (parity's): every sample of a float output "
                                              "needs at least this cosine with the source's.")
                          ] = defaults.PARITY_MIN_COSINE,
    opt_level: Annotated[str, typer.Option(help="ORT graph optimisation: disable, basic, extended, all.")
                         ] = defaults.OPT_LEVEL,
    max_shapes: Annotated[int, typer.Option(help="Largest cartesian product of axis sizes; beyond it the axes "
                                            "vary jointly (as parity).")] = defaults.PARITY_MAX_SHAPES,
    cache_dir: Annotated[Optional[Path], typer.Option(help=CACHE_HELP, show_default=False)] = None,
    offline: Annotated[bool, typer.Option("--offline", help=OFFLINE_HELP)] = False,
    limits: Annotated[bool, typer.Option("--limits", help="Instead of checking a model, measure each release's "
                                         "highest loadable IR version and opsets (ONNX_MODEL is ignored; give "
                                         "'-').")] = False,
    record: Annotated[bool, typer.Option("--record", help="Merge the verdicts into the manifest beside the model "
                                         "(runtime_matrix; checksums untouched).")] = False,
    json_out: Annotated[Optional[str], json_option()] = None,
    junit: Annotated[Optional[Path], typer.Option(help="Write JUnit XML: one suite per release x provider.",
                                                  show_default=False, metavar="PATH")] = None,
    markdown: Annotated[Optional[Path], typer.Option(help="Write the release x provider matrix as markdown.",
                                                     show_default=False, metavar="PATH")] = None,
    debug: Annotated[bool, typer.Option("--debug", help=DEBUG_HELP)] = False,
) -> None:
    """Load and run ONNX_MODEL on each listed onnxruntime release (each in its own cached
    virtualenv) and compare with the eager model at parity's shapes and samples: per release
    and provider, loads or not (in the runtime's own words), values pass or fail; the lowest
    release that passes. Exit 1 if any listed release fails."""
    json_stdout = json_out == "-"
    with user_errors(debug):
        from onnxtax.core.errors import InputSpecError
        from onnxtax.core.paths import PlannedFiles
        from onnxtax.runtimes import check_runtimes, measure_limits
        from onnxtax.core.specs import parse_dim_values, parse_ranges

        if not ort:
            raise InputSpecError("no onnxruntime release given", "e.g. --ort 1.16.3,1.18.1,1.20.1")
        if record and not limits:
            from onnxtax.core.manifest import read_manifest

            read_manifest(onnx_model)  # no manifest to record into: exit 2 before the work
        files = PlannedFiles().write(json_out, "--json").write(junit, "--junit").write(markdown, "--markdown")
        if not limits:
            from onnxtax.parity import parse_tolerances
            from onnxtax.runtimes import RuntimesOptions, parse_versions

            options = RuntimesOptions(versions=parse_versions(ort), providers=provider or None,
                                      cache_dir=cache_dir, offline=offline, dims=parse_dim_values(dim, multi=True),
                                      samples=samples, seed=seed, ranges=parse_ranges(range_),
                                      data_files=list(data) + text_files(text),
                                      rtol=rtol, atol=atol, noise_factor=noise_factor,
                                      tolerances=parse_tolerances(tolerance), min_cosine=min_cosine,
                                      opt_level=opt_level, max_shapes=max_shapes)
            options.validate()
            spec = hub_spec(spec, random_init, trust_remote_code) if spec else spec
            files.read_spec(spec).read_artifact(onnx_model)
            for f in [*data, *text]:
                files.read(f, f"the data file {f.name}")
        check_files(files)
        with progress_display("runtimes") as progress:
            say = _say(progress)
            if limits:
                rows = measure_limits(ort, cache_dir=cache_dir, offline=offline, progress=say)
            else:
                report = check_runtimes(onnx_model, None, spec, input or None, options, progress=say)
        if limits:
            _limits_output(rows, json_out)
            raise typer.Exit(EXIT_OK)
        _write_outputs(report, None if json_stdout else json_out, junit, markdown)
        if record:
            from onnxtax.runtimes.matrix import record_matrix

            recorded = record_matrix(onnx_model, report)
    if json_stdout:
        print_json(report.to_dict())
    else:
        runtimes_table(report, console)
    runtimes_verdict(report, err_console if json_stdout else console)
    print_memory(report, err_console if json_stdout else console)
    if record:
        (err_console if json_stdout else console).print(f"recorded in {recorded}", highlight=False)
    raise typer.Exit(report.exit_code)


def _say(progress):
    """The bar on a terminal; in a CI log, lines for the slow steps only (virtualenv builds)."""
    from rich.markup import escape

    def say(message: str, done: int | None = None, total: int | None = None) -> None:
        progress(message, done, total)
        if not progress.out.is_terminal and any(w in message for w in ("pip install", "ready in", "waiting")):
            progress.print(escape(message), highlight=False, soft_wrap=True)
    return say


def _write_outputs(report, json_out: str | None, junit: Path | None, markdown: Path | None) -> None:
    from onnxtax.core.errors import OnnxtaxError
    from onnxtax.core.files import write_json_atomic, write_text_atomic
    from onnxtax.core.report import append_github_summary, jsonable
    from onnxtax.render.junit import write_junit
    from onnxtax.render.runtimes import runtimes_junit_suites, runtimes_markdown

    target = ""
    try:
        if json_out:
            target = f"--json {json_out}"
            write_json_atomic(json_out, jsonable(report.to_dict()))
        if junit:
            target = f"--junit {junit}"
            write_junit(junit, runtimes_junit_suites(report), name="onnxtax runtimes")
        if markdown:
            target = f"--markdown {markdown}"
            write_text_atomic(markdown, runtimes_markdown(report))
        target = "$GITHUB_STEP_SUMMARY"
        append_github_summary(runtimes_markdown(report))
    except OSError as exc:
        raise OnnxtaxError(f"cannot write {target}: {exc.strerror or exc}",
                           "give a path in a writable directory") from exc


def _limits_output(rows, json_out: str | None) -> None:
    from rich.table import Table

    from onnxtax.core.files import write_json_atomic

    data = {"schema": "onnxtax.ort-limits/1", "limits": [r.to_dict() for r in rows]}
    if json_out == "-":
        print_json(data)
        return
    if json_out:
        write_json_atomic(json_out, data)
    table = Table(title="onnxruntime limits (measured here)", title_justify="left", header_style="bold")
    for col in ("release", "ai.onnx opset", "ai.onnx.ml opset", "IR version"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.latest, str(r.max_opset), str(r.max_ml_opset), str(r.max_ir))
    console.print(table)
