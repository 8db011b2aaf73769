"""`onnxtax sign`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onnxtax.cli._app import (DEBUG_HELP, EXIT_CODES_HELP, app, check_files, json_option, print_error, summary_console,
                              user_errors, write_json_report)

KEY_HELP = ("The PEM private key to sign with: elliptic curve P-256, P-384 or P-521 (`openssl ecparam -name "
            "prime256v1 -genkey -noout -out key.pem`); an encrypted one opens with $ONNXTAX_SIGN_KEY_PASSWORD.")


@app.command(epilog=EXIT_CODES_HELP)
def sign(
    model: Annotated[Path, typer.Argument(help="The .onnx file; its NAME.manifest.json must be beside it.",
                                          show_default=False)],
    key: Annotated[Path, typer.Option("--key", help=KEY_HELP, show_default=False)],
    report: Annotated[list[Path], typer.Option("--report", help="A gate's JSON report about this artifact (`--json` "
                                               "of lint-ops, parity, runtimes, quantize or bench), recorded in the "
                                               "provenance by digest and verdict. Repeatable; a report that did not "
                                               "pass refuses the signing.", show_default=False)] = [],  # noqa: B006
    json_out: Annotated[str | None, json_option()] = None,
    debug: Annotated[bool, typer.Option("--debug", help=DEBUG_HELP)] = False,
) -> None:
    """Sign the artifact's files (the .onnx, its external data, its manifest and a provenance
    statement) with OpenSSF model signing and a private key: NAME.sig and NAME.provenance.json
    beside it, the key's fingerprint in the manifest. Its checksums must match first."""
    with user_errors(debug):
        from onnxtax.core.manifest import provenance_path_for, signature_path_for
        from onnxtax.core.paths import PlannedFiles
        from onnxtax.verify.attest import read_gate_report
        from onnxtax.verify.keys import load_private_key
        from onnxtax.verify.sign import sign_artifact

        files = PlannedFiles().read_artifact(model, signing=False).read(key, "the signing key")
        for path in report:
            files.read(path, f"the report {path.name}")
        files.write(signature_path_for(model), "the signature").write(provenance_path_for(model), "the provenance")
        files.write(json_out, "--json")
        check_files(files)
        load_private_key(key)  # a bad key before the reports are read
        gates = [read_gate_report(path, model) for path in report]
        result = sign_artifact(model, key, gates=gates)
        write_json_report(result.to_dict(), json_out)
    from onnxtax.render.verify import sign_summary

    sign_summary(result, summary_console(json_out))
    if not result.passed:
        print_error(result.refused or "not signed", label="sign refused")
    raise typer.Exit(result.exit_code)
