"""`onnxtax lint-ops`: the lint rules as a command (table, --json, --sarif, exit code)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from onnxtax.core import defaults

from onnxtax.cli._app import (DEBUG_HELP, EXIT_CODES_HELP, app, check_files, console, json_option, print_json,
                              print_memory, progress_display, user_errors)
from onnxtax.cli.export import SPEC_RUNS_CODE


@app.command("lint-ops", epilog=EXIT_CODES_HELP)
def lint_ops(
    model: Annotated[Optional[Path], typer.Argument(help="The .onnx file to lint (a manifest beside it, from `onnxtax "
                                                    "export`, enables the baked-shape checks). Leave it out to run "
                                                    "only the --source rules (with --input), e.g. after a failed "
                                                    "export.", show_default=False)] = None,
    source: Annotated[Optional[str], typer.Option(help="The PyTorch model it came from (path/to/file.py:NAME, or "
                                                  "hf:DIR[#task] / st:DIR with its inputs derived): "
                                                  "trace it and report data-dependent branches, Python values "
                                                  "taken from tensors and custom ops at your file:line. "
                                                  + SPEC_RUNS_CODE, show_default=False)] = None,
    input: Annotated[list[str], typer.Option("--input", "-i", help="NAME:DIMS[:DTYPE] per forward() argument, for "
                                             "--source (default: the manifest's inputs).",
                                             show_default=False)] = [],  # noqa: B006
    target_opset: Annotated[Optional[int], typer.Option(help="The deployment runtime's highest ai.onnx opset: "
                                                        "anything above is an error.", show_default=False)] = None,
    target_ir: Annotated[Optional[int], typer.Option(help="The deployment runtime's highest IR version.",
                                                     show_default=False)] = None,
    target_ort: Annotated[Optional[str], typer.Option(help="The deployment onnxruntime release (1.16 or 1.16.3): "
                                                      "its IR version, opset and op limits from onnxtax's table "
                                                      "(nothing is installed); what it refuses is an error "
                                                      "(rule target-runtime).", show_default=False)] = None,
    provider: Annotated[list[str], typer.Option("--provider", "-p", help="Check ORT's node placement on this "
                                                "provider (e.g. openvino:device_type=CPU); providers not on this "
                                                "host are reported as not checked.", show_default=False)] = [],  # noqa: B006
    allow: Annotated[list[str], typer.Option(help="RULE or RULE:NODE (NODE may use * and ?): report but do not "
                                             "fail. Repeatable.", show_default=False)] = [],  # noqa: B006
    fail_on: Annotated[str, typer.Option(help="Lowest severity that fails: error or warning.")] = defaults.LINT_FAIL_ON,
    json_path: Annotated[Optional[str], json_option()] = None,
    sarif_path: Annotated[Optional[Path], typer.Option("--sarif", help="Write SARIF 2.1.0 to PATH (GitHub code "
                                                       "scanning).", show_default=False)] = None,
    debug: Annotated[bool, typer.Option("--debug", help=DEBUG_HELP)] = False,
) -> None:
    """Find what will not run, or not run the same, where the model is deployed: control flow,
    custom ops, opset/IR above the target, provider fallback, float64, baked shapes; with
    --source, data-dependent Python code at its file:line."""
    json_stdout = json_path == "-"
    with user_errors(debug):
        from onnxtax.core.errors import InputSpecError
        from onnxtax.lint import lint_model
        from onnxtax.core.specs import parse_input_specs

        from onnxtax.core.paths import PlannedFiles
        from onnxtax.lint import LintOptions

        options = LintOptions(target_opset=target_opset, target_ir=target_ir, target_ort=target_ort,
                              providers=list(provider), allow=list(allow), fail_on=fail_on)
        options.validate()  # unknown rules are usage errors before any work
        specs = parse_input_specs(input) if input else None
        if specs and not source:
            raise InputSpecError("--input is only used with --source", "add --source path/to/model.py:NAME")
        check_files(PlannedFiles().read_artifact(model).read_spec(source).write(json_path, "--json")
                    .write(sarif_path, "--sarif"))
        with progress_display("lint-ops") as progress:
            report = lint_model(model, options, source=source, inputs=specs, progress=progress)
    if json_stdout:
        print_json(report.to_dict())
    else:
        from onnxtax.render.lint import lint_table

        lint_table(report, console)
        print_memory(report)
    with user_errors(debug):
        _write_outputs(report, json_path if not json_stdout else None, sarif_path)
    if not json_stdout:
        for path, what in ((json_path, "JSON"), (sarif_path, "SARIF")):
            if path is not None:
                console.print(f"{what} report: {path}", highlight=False, markup=False)
    raise typer.Exit(report.exit_code)


def _write_outputs(report, json_path: str | None, sarif_path: Path | None) -> None:
    """Both reports, atomically, through the one output writer."""
    from onnxtax.core.files import write_output
    from onnxtax.core.report import jsonable
    from onnxtax.render.sarif import lint_sarif

    for flag, path, data in (("--sarif", sarif_path, lambda: lint_sarif(report)), ("--json", json_path, report.to_dict)):
        if path is not None:
            write_output(path, jsonable(data()), flag)
