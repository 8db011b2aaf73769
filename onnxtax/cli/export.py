"""`onnxtax export`, `onnxtax verify`, `onnxtax providers`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onnxtax.core import defaults

from onnxtax.cli._app import (DEBUG_HELP, EXIT_CODES_HELP, app, check_files, console, err_console, json_option,
                              print_error, print_memory, progress_display, summary_console, user_errors,
                              write_json_report)

SPEC_RUNS_CODE = ("Loading a SPEC runs that file's code (and what it imports), as importing it does: give only "
                  "files you trust.")
SPEC_ARG = typer.Argument(help="The model: path/to/file.py:NAME or package.module:NAME (an nn.Module instance, "
                               "class, or zero-argument factory), or a Hugging Face folder: hf:DIR[#task] or st:DIR "
                               "(sentence-transformers), inputs, ranges and output names derived, nothing "
                               "downloaded. " + SPEC_RUNS_CODE, show_default=False)
TEXT_HELP = ("A text file, one sentence a line, tokenized by an hf:/st: model's own tokenizer into one batch of "
             "real inputs (padded as the tokenizer pads); used as --data is. Repeatable.")
RANDOM_INIT_HELP = ("hf:/st: a folder without weights (or lacking the task's head) is initialised from a fixed "
                    "seed instead of refused: for testing a pipeline, never for shipping.")
TRUST_HELP = ("hf:/st: run the Python code a model folder ships (config.json auto_map); refused without this "
              "flag. Read that code first.")
RANGE_HELP = ("NAME=LOW:HIGH: value range of an input (integers: HIGH exclusive, e.g. token ids 0:30522). "
              "Integers without one: mask-like names all ones, token type ids 0:2, other ids/tokens/positions "
              "0:32, other integers 0:10.")
DATA_HELP = ("A .npz of real inputs (arrays keyed by input name, one batch per file), run besides the "
             "random samples. Repeatable.")
INPUT_HELP = ("NAME:DIMS[:DTYPE], one per forward() argument, in order. DIMS: integers (static) or names "
              "(dynamic axes, shared across inputs by name), e.g. x:batch,128 or 'ids:[batch,seq]:int64'. "
              "DTYPE defaults to float32. Derived for hf:/st: specs.")


def hub_spec(spec: str, random_init: bool, trust_remote_code: bool) -> str:
    """The SPEC with --random-init / --trust-remote-code carried in it (every stage and child builds
    the same model from the string)."""
    from onnxtax.core.hub.spec import spec_with_flags

    return spec_with_flags(spec, random_init=random_init, trust_remote_code=trust_remote_code)


def text_files(paths: list[Path]) -> list:
    """--text files: data files read as sentences by the model's tokenizer."""
    from onnxtax.core.hub.text import TextFile

    return [TextFile(p) for p in paths]


@app.command(epilog=EXIT_CODES_HELP)
def export(
    spec: Annotated[str, SPEC_ARG],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the .onnx file; the manifest "
                                         "goes beside it as NAME.manifest.json.", show_default=False)],
    input: Annotated[list[str], typer.Option("--input", "-i", help=INPUT_HELP, show_default=False)] = [],  # noqa: B006
    opset: Annotated[int, typer.Option(help="The ai.onnx opset the file must have; anything else fails.")] = defaults.OPSET,
    exporter: Annotated[str, typer.Option(help="dynamo (torch.export-based, default) or torchscript.")] = defaults.EXPORTER,
    dim: Annotated[list[str], typer.Option(help="SYMBOL=VALUE: example size of a dynamic axis while exporting. "
                                           "Defaults: 3 for the first axis, then 5, 7, 11, ... (never 0 or 1, "
                                           "which torch.export specialises).", show_default=False)] = [],  # noqa: B006
    output_name: Annotated[list[str], typer.Option("--output-name", help="Name of each graph output, in order. "
                                                   "Default: dict keys, or output / output_0, output_1, ...",
                                                   show_default=False)] = [],  # noqa: B006
    external_data: Annotated[str, typer.Option(help="auto (only above 2 GB), always, never.")] = defaults.EXTERNAL_DATA,
    range_: Annotated[list[str], typer.Option("--range", help=RANGE_HELP + " Used for the example input and "
                                              "the ONNX Runtime smoke run.", show_default=False)] = [],  # noqa: B006
    data: Annotated[list[Path], typer.Option(help=DATA_HELP.replace("random samples", "smoke run's sizes"),
                                             show_default=False)] = [],  # noqa: B006
    text: Annotated[list[Path], typer.Option(help=TEXT_HELP, show_default=False)] = [],  # noqa: B006
    random_init: Annotated[bool, typer.Option("--random-init", help=RANDOM_INIT_HELP)] = False,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help=TRUST_HELP)] = False,
    target_ort: Annotated[str | None, typer.Option(help="The onnxruntime release the file must load in (1.16 or "
                                                   "1.16.3): converts --opset down to what it loads, writes the "
                                                   "lowest IR version that opset allows, and runs the file in that "
                                                   "release's cached virtualenv when it can (see `onnxtax runtimes`).",
                                                   show_default=False)] = None,
    runtime_cache: Annotated[Path | None, typer.Option(help="The runtime virtualenv cache for --target-ort (default: "
                                                       "$ONNXTAX_RUNTIMES_DIR, else ~/.cache/onnxtax/runtimes).",
                                                       show_default=False)] = None,
    offline: Annotated[bool, typer.Option("--offline", help="With --target-ort: never build a virtualenv; verify only "
                                          "if the release is cached.")] = False,
    sign_key: Annotated[Path | None, typer.Option("--sign-key", help="Sign the artifact after it passed, as "
                                                  "`onnxtax sign --key` does (PEM elliptic-curve private key): "
                                                  "NAME.sig and NAME.provenance.json beside it.",
                                                  show_default=False)] = None,
    json_out: Annotated[str | None, json_option()] = None,
    debug: Annotated[bool, typer.Option("--debug", help=DEBUG_HELP)] = False,
) -> None:
    """Export a PyTorch model to ONNX with the opset locked, dynamic axes kept, the checker
    and an ONNX Runtime run passed, and a manifest with checksums. Writes nothing on failure."""
    with user_errors(debug):
        from onnxtax.core.paths import PlannedFiles
        from onnxtax.core.specs import parse_dim_values, parse_input_specs, parse_ranges
        from onnxtax.export import ExportOptions, export_model

        spec = hub_spec(spec, random_init, trust_remote_code)
        options = ExportOptions(opset=opset, exporter=exporter, dims={k: v[0] for k, v in parse_dim_values(dim).items()},
                                output_names=output_name or None, external_data=external_data,
                                ranges=parse_ranges(range_), data_files=list(data) + text_files(text),
                                target_ort=target_ort)
        options.validate()
        files = PlannedFiles().read_spec(spec).write_artifact(output, "-o").write(json_out, "--json")
        for f in [*data, *text]:
            files.read(f, f"the data file {f.name}")
        files.read(sign_key, "the signing key")
        check_files(files)
        if sign_key is not None:
            from onnxtax.verify.keys import load_private_key
            from onnxtax.verify.signature import library_version

            load_private_key(sign_key)  # a bad key is exit 2 before minutes of export
            library_version()
        specs = parse_input_specs(input)
        with progress_display("export") as progress:
            result = export_model(spec, output, specs, options, debug=debug, progress=progress,
                                  verify_target=_target_verifier(target_ort, runtime_cache, offline))
    signed = None
    if sign_key is not None and result.passed:
        with user_errors(debug):
            from onnxtax.verify.sign import sign_artifact

            signed = sign_artifact(output, sign_key, builder="export")
    if json_out:
        with user_errors(debug):
            data = result.to_dict()
            if sign_key is not None:
                data["signing"] = signed.to_dict() if signed is not None else None
            write_json_report(data, json_out)
    if json_out != "-":
        from onnxtax.render.export import export_table

        export_table(result, console)
        print_memory(result)
    if signed is not None:
        from onnxtax.render.verify import sign_summary

        sign_summary(signed, summary_console(json_out))
        if not signed.passed:
            print_error(signed.refused or "not signed", label="sign refused")
            raise typer.Exit(signed.exit_code)
    if not result.passed:
        print_error(result.error, result.hint, label="export failed")
        err_console.print(f"  nothing was written to {result.output}", highlight=False, markup=False)
        if debug and result.exporter_log:
            err_console.print(result.exporter_log, highlight=False, markup=False)
        if debug and result.traceback:
            err_console.print(result.traceback, highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(result.exit_code)


def _target_verifier(target_ort: str | None, cache: Path | None, offline: bool):
    """--target-ort runs the file in that release (onnxtax.runtimes.matrix), imported only when asked."""
    if not target_ort:
        return None
    from onnxtax.runtimes import target_verifier

    return target_verifier(cache, offline)


@app.command(epilog=EXIT_CODES_HELP)
def verify(
    model: Annotated[Path, typer.Argument(help="The .onnx file; its NAME.manifest.json must be beside it.",
                                          show_default=False)],
    key: Annotated[Path | None, typer.Option("--key", help="The PEM public key the artifact must be signed with: "
                                             "the signature (NAME.sig) is checked first, and every file it covers.",
                                             show_default=False)] = None,
    require_signature: Annotated[bool, typer.Option("--require-signature", help="An unsigned artifact fails (exit "
                                                    "1); needs --key.")] = False,
    json_out: Annotated[str | None, json_option()] = None,
    debug: Annotated[bool, typer.Option("--debug", help=DEBUG_HELP)] = False,
) -> None:
    """Check the artifact: with --key its signature first, then every checksum in the manifest, then
    the provenance it records, in words: 0 all pass, 1 a signature or file fails (a changed byte, a
    file added or removed, another key, a damaged signature, a file outside the folder) or an
    unsigned artifact with --require-signature, 2 no manifest or a bad key. Files beside the
    artifact named like its data but not in the manifest are reported."""
    with user_errors(debug):
        from onnxtax.core.paths import PlannedFiles
        from onnxtax.verify import verify_artifact

        check_files(PlannedFiles().read_artifact(model).read(key, "the public key").write(json_out, "--json"))
        if require_signature and key is None:
            from onnxtax.core.errors import OnnxtaxError

            raise OnnxtaxError("--require-signature needs --key: a signature that is not checked proves nothing",
                               "give --key PUBLIC.pem, the public half of the signing key")
        if key is not None:
            from onnxtax.verify.keys import load_public_key

            load_public_key(key)
        report = verify_artifact(model, key=key, require_signature=require_signature)
        write_json_report(report.to_dict(), json_out)
    from onnxtax.render.verify import verify_failure, verify_summary

    verify_summary(report, summary_console(json_out))
    verify_failure(report, err_console)
    if json_out != "-":
        print_memory(report)
    raise typer.Exit(report.exit_code)


@app.command(epilog=EXIT_CODES_HELP)
def providers(
    json_out: Annotated[str | None, json_option()] = None,
    debug: Annotated[bool, typer.Option("--debug", help=DEBUG_HELP)] = False,
) -> None:
    """The execution providers the installed onnxruntime can use on this host."""
    with user_errors(debug):
        from onnxtax.core.paths import PlannedFiles
        from onnxtax.core.providers import host_providers

        check_files(PlannedFiles().write(json_out, "--json"))
        host = host_providers()
        write_json_report(host.to_dict(), json_out)
    from rich.table import Table

    if json_out == "-":
        return
    console.print(f"{host.package} {host.version}  (loads IR <= {host.max_ir_version}, ai.onnx opset <= "
                  f"{host.max_opset})", highlight=False)
    table = Table(box=None, pad_edge=False)
    for col in ("provider", "short name", "runs nodes", "note"):
        table.add_column(col)
    for p in host.providers:
        table.add_row(p.name, p.short, "yes" if p.compute else "no", p.note)
    console.print(table)
