"""`onnxtax parity`: the ONNX artifact against its eager source, per provider, shape and output."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from onnxtax.core import defaults

from onnxtax.cli._app import (DEBUG_HELP, NOISE_FACTOR_HELP, EXIT_CODES_HELP, app, check_files, console, err_console, json_option,
                              print_json, print_memory, progress_display, user_errors)
from onnxtax.cli.export import (DATA_HELP, INPUT_HELP, RANDOM_INIT_HELP, RANGE_HELP, SPEC_ARG, TEXT_HELP, TRUST_HELP,
                                hub_spec, text_files)

from onnxtax.core.defaults import PARITY_ATOL as DEFAULT_ATOL
from onnxtax.core.defaults import PARITY_MAX_SHAPES as MAX_SHAPES
from onnxtax.core.defaults import PARITY_MIN_COSINE as DEFAULT_MIN_COSINE
from onnxtax.core.defaults import PARITY_RTOL as DEFAULT_RTOL
from onnxtax.core.defaults import PARITY_SAMPLES as DEFAULT_SAMPLES
from onnxtax.core.defaults import LOCALIZE_MEMORY_MB, LOCALIZE_TIME_BUDGET_S


@app.command(epilog=EXIT_CODES_HELP)
def parity(
    spec: Annotated[str, SPEC_ARG],
    onnx_model: Annotated[Path, typer.Argument(help="The exported .onnx file.", show_default=False)],
    input: Annotated[list[str], typer.Option("--input", "-i", help=INPUT_HELP + " Default: the manifest beside "
                                             "the model, else the ONNX graph's inputs.", show_default=False)] = [],  # noqa: B006
    dim: Annotated[list[str], typer.Option(help="SYMBOL=V1,V2,...: sizes to test on a dynamic axis. Default: 1, "
                                           "an even and an odd size unlike the export-time one (1,4,7).",
                                           show_default=False)] = [],  # noqa: B006
    samples: Annotated[int, typer.Option(help="Random samples per shape (seeded; both signs, magnitudes 1, 0.1, "
                                         "10 in turn).")] = DEFAULT_SAMPLES,
    seed: Annotated[int, typer.Option(help="Seed of the random samples.")] = defaults.PARITY_SEED,
    range_: Annotated[list[str], typer.Option("--range", help=RANGE_HELP, show_default=False)] = [],  # noqa: B006
    data: Annotated[list[Path], typer.Option(help=DATA_HELP, show_default=False)] = [],  # noqa: B006
    text: Annotated[list[Path], typer.Option(help=TEXT_HELP, show_default=False)] = [],  # noqa: B006
    random_init: Annotated[bool, typer.Option("--random-init", help=RANDOM_INIT_HELP)] = False,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help=TRUST_HELP)] = False,
    rtol: Annotated[float, typer.Option(help="Relative tolerance: pass when |onnx-source| <= atol*rms + "
                                        "rtol*|source|.")] = DEFAULT_RTOL,
    atol: Annotated[float, typer.Option(help="Absolute tolerance in units of the output's RMS (the source "
                                        "output's, at each shape): an output of magnitude 1e-9 is compared at "
                                        "~1e-14, not swallowed.")] = DEFAULT_ATOL,
    noise_factor: Annotated[Optional[float], typer.Option(help=NOISE_FACTOR_HELP, show_default=False)] = None,
    tolerance: Annotated[list[str], typer.Option(help="OUTPUT=RTOL:ATOL for one ONNX output (exactly that: no "
                                                 "noise term). Integer and bool "
                                                 "outputs must match exactly unless named here.",
                                                 show_default=False)] = [],  # noqa: B006
    min_cosine: Annotated[float, typer.Option(help="Similarity gate: every sample of a float output needs at "
                                              "least this cosine similarity with the source's.")] = DEFAULT_MIN_COSINE,
    allow_constant: Annotated[list[str], typer.Option(help="OUTPUT that may be the same for every input (all "
                                                      "zeros, a buffer): compared, not failed as 'not compared: "
                                                      "constant output'. Repeatable.", show_default=False,
                                                      metavar="OUTPUT")] = [],  # noqa: B006
    test_assumed: Annotated[bool, typer.Option(help="Add sizes just outside every range torch.export assumed at "
                                               "export (from the manifest), e.g. batch=33 for batch <= 32.")] = True,
    provider: Annotated[list[str], typer.Option("--provider", "-p", help="Execution provider: a short name (cpu, "
                                                "cuda, tensorrt, openvino, dml, coreml, ...) or full EP name, with "
                                                "options as openvino:device_type=CPU. Repeatable; each runs in its "
                                                "own session. Default: every compute provider on this host.",
                                                show_default=False)] = [],  # noqa: B006
    skip_unavailable: Annotated[bool, typer.Option(help="Report a requested provider this host lacks as skipped "
                                                   "instead of failing with exit 2.")] = False,
    fail_on_fallback: Annotated[bool, typer.Option(help="Fail a provider when ORT places any node on another "
                                                   "provider.")] = False,
    opt_level: Annotated[str, typer.Option(help="ORT graph optimisation: disable, basic, extended, all.")] = defaults.OPT_LEVEL,
    threads: Annotated[int | None, typer.Option(help="ORT intra-op threads (default: ORT's choice).",
                                                show_default=False)] = None,
    max_shapes: Annotated[int, typer.Option(help="Largest cartesian product of axis sizes; beyond it the axes "
                                            "vary jointly.")] = MAX_SHAPES,
    share_weights: Annotated[str, typer.Option(help="auto, always or never: the CPU session reads the weights "
                                               "from the eager model's memory (each checked byte for byte "
                                               "against the file first) instead of loading a second copy; "
                                               "ORT pre-packing is then off. auto: from 256 MB of "
                                               "weights.")] = defaults.PARITY_SHARE_WEIGHTS,
    json_out: Annotated[str | None, json_option()] = None,
    junit: Annotated[Path | None, typer.Option(help="Write JUnit XML: one testcase per provider x shape x output.",
                                               show_default=False, metavar="PATH")] = None,
    sarif: Annotated[Path | None, typer.Option(help="Write SARIF 2.1.0 for code scanning: with --localize, one "
                                               "result per failing provider at the source line where it "
                                               "first diverges.", show_default=False, metavar="PATH")] = None,
    localize: Annotated[bool, typer.Option("--localize", help="On failure, find where each failing provider "
                                           "first departs from the source: module path, ONNX node, source line, "
                                           "local or inherited, the trail to the output, the rows that differ.")
                        ] = False,
    localize_budget: Annotated[float, typer.Option(help="Seconds --localize may take, all providers together.",
                                                   metavar="SECONDS")] = LOCALIZE_TIME_BUDGET_S,
    localize_memory: Annotated[float, typer.Option(help="Megabytes of intermediate values --localize holds at a "
                                                   "time (eager and ONNX copies); more modules, more chunks.",
                                                   metavar="MB")] = LOCALIZE_MEMORY_MB,
    debug: Annotated[bool, typer.Option("--debug", help=DEBUG_HELP)] = False,
) -> None:
    """Check that MODEL.onnx computes what the eager PyTorch model computes, in FP32, on every
    provider, at several sizes of every dynamic axis, on seeded random and real samples.
    Reports where ORT placed each node. Appends a summary to $GITHUB_STEP_SUMMARY when set."""
    json_stdout = json_out == "-"
    with user_errors(debug):
        from onnxtax.core.paths import PlannedFiles
        from onnxtax.core.specs import parse_dim_values, parse_ranges
        from onnxtax.parity import ParityOptions, check_parity, parse_tolerances

        options = ParityOptions(
            dims=parse_dim_values(dim, multi=True), samples=samples, seed=seed, ranges=parse_ranges(range_),
            data_files=list(data) + text_files(text), rtol=rtol, atol=atol, noise_factor=noise_factor,
            tolerances=parse_tolerances(tolerance),
            min_cosine=min_cosine, allow_constant=list(allow_constant), test_assumed=test_assumed,
            providers=provider or None, skip_unavailable=skip_unavailable, fail_on_fallback=fail_on_fallback,
            opt_level=opt_level, threads=threads, max_shapes=max_shapes, share_weights=share_weights,
            localize=localize, localize_budget_s=localize_budget, localize_memory_mb=localize_memory)
        options.validate()
        spec = hub_spec(spec, random_init, trust_remote_code)
        files = (PlannedFiles().read_spec(spec).read_artifact(onnx_model).write(json_out, "--json")
                 .write(junit, "--junit").write(sarif, "--sarif"))
        for f in [*data, *text]:
            files.read(f, f"the data file {f.name}")
        check_files(files)
        with progress_display("parity") as progress:
            report = check_parity(spec, onnx_model, input or None, options, progress=progress)
    out = err_console if json_stdout else console
    if json_stdout:
        print_json(report.to_dict())
    if hasattr(report, "candidates"):  # an INT8 artifact: judged on the budgets it was approved on
        from onnxtax.render.quantize import quantize_table, quantize_verdict

        if not json_stdout:
            out.print("[dim]a quantized artifact: its recorded segments are checked against its recorded budgets "
                      "(FP32 tolerances do not apply)[/]", highlight=False)
            quantize_table(report, out)
        quantize_verdict(report, out)
    else:
        from onnxtax.render.parity import parity_table, parity_verdict

        if not json_stdout:
            parity_table(report, out)
        parity_verdict(report, out)
    print_memory(report, out)
    with user_errors(debug):
        _write_outputs(report, json_out, junit, sarif)
    raise typer.Exit(report.exit_code)


def _write_outputs(report: Any, json_out: str | None, junit: Path | None, sarif: Path | None = None) -> None:
    from onnxtax.core.files import write_output
    from onnxtax.core.report import append_github_summary, jsonable

    if json_out and json_out != "-":
        write_output(json_out, jsonable(report.to_dict()), "--json")
    if hasattr(report, "candidates"):
        return  # an INT8 recheck: its JSON only
    from onnxtax.render.junit import write_junit
    from onnxtax.render.parity import parity_junit_suites, parity_markdown

    if junit:
        write_junit(junit, parity_junit_suites(report), name="onnxtax parity")
    if sarif:
        from onnxtax.render.sarif import parity_sarif

        write_output(sarif, parity_sarif(report), "--sarif")
    append_github_summary(parity_markdown(report))
