"""`onnxtax lint-ops`: the lint rules as a command (table, --json, --sarif, exit code)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from onnxtax.core import defaults

from onnxtax.cli._app import (DEBUG_HELP, EXIT_CODES_HELP, app, console, print_json, print_memory, progress_display,
                              user_errors)
from onnxtax.cli.export import SPEC_RUNS_CODE

MAX_ROWS_PER_RULE = 25
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


@app.command("lint-ops", epilog=EXIT_CODES_HELP)
def lint_ops(
    model: Annotated[Optional[Path], typer.Argument(help="The .onnx file to lint (a manifest beside it, from `onnxtax "
                                                    "export`, enables the baked-shape checks). Leave it out to run "
                                                    "only the --source rules (with --input), e.g. after a failed "
                                                    "export.", show_default=False)] = None,
    source: Annotated[Optional[str], typer.Option(help="The PyTorch model it came from (path/to/file.py:NAME): "
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
    json_path: Annotated[Optional[str], typer.Option("--json", help="Write the report as JSON to PATH ('-' = "
                                                     "stdout, no table).", show_default=False)] = None,
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
        from onnxtax.lint import check_fail_on, lint_model, parse_allow
        from onnxtax.core.specs import parse_input_specs

        check_fail_on(fail_on)
        parse_allow(allow)  # unknown rules are usage errors before any work
        specs = parse_input_specs(input) if input else None
        if specs and not source:
            raise InputSpecError("--input is only used with --source", "add --source path/to/model.py:NAME")
        _check_outputs(json_path if not json_stdout else None, sarif_path)
        with progress_display("lint-ops") as progress:
            report = lint_model(model, source=source, inputs=specs, target_opset=target_opset, target_ir=target_ir,
                                target_ort=target_ort, providers=provider or None, allow=allow or None, fail_on=fail_on,
                                progress=progress)
    if json_stdout:
        print_json(report.to_dict())
    else:
        render(report)
        print_memory(report)
    with user_errors(debug):
        _write_outputs(report, json_path if not json_stdout else None, sarif_path)
    if not json_stdout:
        for path, what in ((json_path, "JSON"), (sarif_path, "SARIF")):
            if path is not None:
                console.print(f"{what} report: {path}", highlight=False, markup=False)
    raise typer.Exit(report.exit_code)


def _check_outputs(json_path: str | None, sarif_path: Path | None) -> None:
    """Before linting: both report paths must be writable."""
    from onnxtax.core.files import check_output

    for flag, path in (("--json", json_path), ("--sarif", sarif_path)):
        if path is not None:
            check_output(path, flag)


def _write_outputs(report, json_path: str | None, sarif_path: Path | None) -> None:
    """Both reports, atomically, through the one output writer."""
    from onnxtax.core.files import write_output
    from onnxtax.core.report import jsonable

    for flag, path, data in (("--sarif", sarif_path, report.to_sarif), ("--json", json_path, report.to_dict)):
        if path is not None:
            write_output(path, jsonable(data()), flag)


def render(report) -> None:
    """Findings grouped by rule, then what was allowed, then one verdict line."""
    from rich.markup import escape
    from rich.table import Table

    from onnxtax.lint import RULES

    info = report.model_info
    opsets = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in info.get("opsets", {}).items())
    rt = report.runtime
    if not info:  # source rules only, no .onnx file
        console.print(f"[bold]{escape((report.source or {}).get('spec') or 'source')}[/]  source rules only "
                      "(no .onnx file)", highlight=False, soft_wrap=True)
    else:
        console.print(f"[bold]{escape(report.model)}[/]  IR {info.get('ir_version')}, {opsets}, "
                      f"{info.get('nodes')} nodes" + (f" ({info['subgraphs']} subgraphs)" if info.get("subgraphs") else "")
                      + f"  | {rt.get('package')} {rt.get('version')} "
                      + ("loads it" if rt.get("loads_model") else "[red]refuses it[/]"), highlight=False,
                      soft_wrap=True)
    for checked in report.providers.get("checked", []):
        pl = checked.get("placement")
        if pl:
            console.print(f"placement on {escape(checked['label'])}: {pl['on_provider']}/{pl['total_nodes']} nodes "
                          f"on the provider, {pl['fallback']} elsewhere", highlight=False, soft_wrap=True)
    active = [f for f in report.findings if not f.allowed]
    for rule_id in RULES:
        group = [f for f in active if f.rule == rule_id]
        if not group:
            continue
        table = Table(title=f"{rule_id} ({len(group)})", title_justify="left", title_style="bold", box=None,
                      pad_edge=False, show_header=True, expand=False)
        table.add_column("severity", no_wrap=True)
        table.add_column("where", overflow="fold", max_width=38)
        table.add_column("op", overflow="fold", max_width=28)
        table.add_column("message", overflow="fold", ratio=1)
        last_hint = None
        for f in group[:MAX_ROWS_PER_RULE]:
            where = f.where or ""
            if f.source_location:
                where = f"{where}\n{_short_path(f.source_location)}" if where else _short_path(f.source_location)
            op = ""
            if f.op_type:
                op = f.op_type if f.domain in (None, "", "ai.onnx") else f"{f.domain}::{f.op_type}"
            text = escape(f.message)
            if f.hint and f.hint != last_hint:
                text += f"\n[dim]fix: {escape(f.hint)}[/]"
                last_hint = f.hint
            table.add_row(f"[{SEVERITY_STYLE[f.severity]}]{f.severity}[/]", escape(where), escape(op), text)
        if len(group) > MAX_ROWS_PER_RULE:
            table.add_row("", f"… {len(group) - MAX_ROWS_PER_RULE} more", "", "see --json for all")
        console.print(table)
        console.print()
    if report.allowed:
        by_entry: dict[str, int] = {}
        for f in report.allowed:
            key = f"{f.rule}:{f.where}" if f.where else f.rule
            by_entry[key] = by_entry.get(key, 0) + 1
        console.print(f"[dim]allowed ({len(report.allowed)}, --allow {escape(', '.join(report.allow))}):[/] "
                      + escape(", ".join(f"{k}" + (f" x{n}" if n > 1 else "") for k, n in by_entry.items())),
                      highlight=False, soft_wrap=True)
    for note in report.notes:
        console.print(f"[dim]note: {escape(note)}[/]", highlight=False, soft_wrap=True)
    if report.source:
        src = report.source
        console.print(f"[dim]source: traced {escape(str(src.get('spec')))} with "
                      f"{escape(', '.join(src.get('inputs', [])))} "
                      f"in {src.get('seconds', 0):.1f} s[/]", highlight=False, soft_wrap=True)
    counts = report.counts()
    parts = [f"{counts[s]} {s}{'s' if counts[s] != 1 and s != 'info' else ''}" for s in ("error", "warning", "info")]
    if counts["allowed"]:
        parts.append(f"{counts['allowed']} allowed")
    verdict = "[bold green]passed[/]" if report.passed else f"[bold red]failed[/] ({counts['failing']} at or above " \
                                                             f"{report.fail_on})"
    console.print(f"lint-ops: {', '.join(parts)} -> {verdict}  [{report.seconds:.1f} s]", highlight=False)


def _short_path(location: str) -> str:
    import os

    path, _, line = location.rpartition(":")
    try:
        rel = os.path.relpath(path)
        if not rel.startswith(".."):
            path = rel
    except ValueError:
        pass
    return f"{path}:{line}"
