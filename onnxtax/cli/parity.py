"""`onnxtax parity`: the ONNX artifact against its eager source, per provider, shape and output."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from onnxtax.core import defaults

from onnxtax.cli._app import (DEBUG_HELP, EXIT_CODES_HELP, app, console, err_console,
                              print_json, print_memory, progress_display, user_errors)
from onnxtax.cli.export import DATA_HELP, INPUT_HELP, RANGE_HELP, SPEC_ARG

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
    rtol: Annotated[float, typer.Option(help="Relative tolerance: pass when |onnx-source| <= atol*rms + "
                                        "rtol*|source|.")] = DEFAULT_RTOL,
    atol: Annotated[float, typer.Option(help="Absolute tolerance in units of the output's RMS (the source "
                                        "output's, at each shape): an output of magnitude 1e-9 is compared at "
                                        "~1e-14, not swallowed.")] = DEFAULT_ATOL,
    tolerance: Annotated[list[str], typer.Option(help="OUTPUT=RTOL:ATOL for one ONNX output. Integer and bool "
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
    json_out: Annotated[str | None, typer.Option("--json", help="Write the report as JSON to PATH; '-' prints it "
                                                 "on stdout (the table is then left out).", show_default=False,
                                                 metavar="PATH")] = None,
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
    from onnxtax.cli.quantize import is_quantized, recheck

    if is_quantized(onnx_model):  # an INT8 artifact is held to its recorded budgets, not FP32 tolerances
        recheck(spec, onnx_model, provider, json_out, debug)
    with user_errors(debug):
        from onnxtax.parity import check_parity, parse_tolerances
        from onnxtax.core.specs import parse_dim_values, parse_ranges

        dims = parse_dim_values(dim, multi=True)
        ranges = parse_ranges(range_)
        tolerances = parse_tolerances(tolerance)
        check_outputs(json_out, junit, sarif)
        with progress_display("parity") as progress:
            report = check_parity(spec, onnx_model, input or None, dims=dims, samples=samples, seed=seed,
                                  ranges=ranges, data_files=data, rtol=rtol, atol=atol, tolerances=tolerances,
                                  min_cosine=min_cosine, allow_constant=allow_constant, test_assumed=test_assumed,
                                  providers=provider or None, skip_unavailable=skip_unavailable,
                                  fail_on_fallback=fail_on_fallback, opt_level=opt_level, threads=threads,
                                  max_shapes=max_shapes, share_weights=share_weights, progress=progress,
                                  localize=localize, localize_budget_s=localize_budget,
                                  localize_memory_mb=localize_memory)
    if json_stdout:
        print_json(report.to_dict())
    else:
        render(report)
    _verdict(report, err_console if json_stdout else console)
    print_memory(report, err_console if json_stdout else console)
    with user_errors(debug):
        _write_outputs(report, json_out, junit, sarif)
    raise typer.Exit(report.exit_code)


def check_outputs(json_out: str | None, junit: Path | None, sarif: Path | None = None) -> None:
    """Refuse output paths that cannot be written before the run, not after it."""
    from onnxtax.core.files import check_output
    from onnxtax.core.report import check_github_summary

    if json_out and json_out != "-":
        check_output(json_out, "--json")
    if junit is not None:
        check_output(junit, "--junit")
    if sarif is not None:
        check_output(sarif, "--sarif")
    check_github_summary()


def _write_outputs(report: Any, json_out: str | None, junit: Path | None, sarif: Path | None = None) -> None:
    from onnxtax.core.files import write_output
    from onnxtax.core.report import append_github_summary, jsonable, write_junit

    if json_out and json_out != "-":
        write_output(json_out, jsonable(report.to_dict()), "--json")
    if junit:
        write_junit(junit, report.junit_suites(), name="onnxtax parity")
    if sarif:
        from onnxtax.parity.sarif import parity_sarif

        write_output(sarif, parity_sarif(report), "--sarif")
    append_github_summary(report.markdown())


def _ratio_style(ratio: float | None) -> str:
    """Green well inside tolerance, yellow within 10x of the limit, red outside."""
    if ratio is None:
        return ""
    if ratio > 1:
        return "bold red"
    return "yellow" if ratio > 0.1 else "green"


def _g(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.{digits}g}"


def render(report: Any, out=None) -> None:
    """The provider x shape x output table, placement per provider, notes and failures."""
    from rich.table import Table
    from rich.markup import escape
    out = out or console
    table = Table(title=f"parity: {escape(report.onnx)} vs {escape(report.model_spec or report.class_name)}",
                  title_justify="left", header_style="bold")
    for col, justify in (("provider", "left"), ("shape", "left"), ("output", "left"), ("rms", "right"),
                         ("atol", "right"), ("max abs", "right"),
                         ("max rel", "right"), ("outside", "right"), ("cosine", "right"),
                         ("worst: onnx vs source", "left"), ("result", "left")):
        folds = col in ("worst: onnx vs source", "shape", "output")
        table.add_column(col, justify=justify, overflow="fold", no_wrap=not folds)
    for pr in report.providers:
        ratios = [c.stats.worst.tolerance_ratio for c in pr.cases if c.stats is not None and c.stats.worst]
        worst_ratio = max(ratios) if ratios and len(pr.cases) > 1 else None
        label = escape(pr.label)
        if not pr.cases:
            table.add_row(label, "-", "-", "", "", "", "", "", "", "", _provider_cell(pr.status))
        for case in pr.cases:
            s = case.stats
            scale = ["-", "-"] if s is None or s.atol_effective is None else [_g(s.scale), _g(s.atol_effective, 2)]
            if s is not None and s.atol_effective is None and (s.source_dtype or "float")[0] in "iub":
                scale = ["-", _g(s.atol, 2)]  # integers: exact unless a tolerance names them
            if s is None or not s.samples or (s.outside == 0 and s.problems):
                nums = ["-"] * 5
            else:
                w = s.worst
                style = _ratio_style(w.tolerance_ratio if w else None)
                worst = f"[{','.join(map(str, w.index))}] {_g(w.onnx, 6)} vs {_g(w.source, 6)}" if w else "-"
                nums = [f"[{style}]{_g(s.max_abs_diff)}[/]" if style else _g(s.max_abs_diff), _g(s.max_rel_diff),
                        f"{s.outside}/{s.elements} ({s.outside_pct:.3g}%)" if s.outside else "0",
                        "-" if s.cosine_min is None else f"{s.cosine_min:.6f}", escape(worst)]
            is_worst = worst_ratio is not None and s is not None and s.worst is not None and (
                s.worst.tolerance_ratio == worst_ratio)
            table.add_row(label, escape(case.shape), escape(case.output), *scale, *nums, _case_cell(case),
                          style="bold" if is_worst else None)
            label = ""  # the provider once per group
        table.add_section()
    out.print(table)
    for pr in report.providers:
        out.print(f"[bold]{escape(pr.label)}[/]: {escape(_placement_line(pr))}", highlight=False, soft_wrap=True)
    for note in report.notes:
        out.print(f"[dim]note: {escape(note)}[/]", highlight=False, soft_wrap=True)
    failures = report.failures
    if failures:
        out.print("[bold red]failures:[/]")
        for line in failures[:15]:
            out.print(f"  - {escape(line)}", highlight=False, soft_wrap=True)
        if len(failures) > 15:
            out.print(f"  ... and {len(failures) - 15} more (--json has them all)")
        for pr in report.providers:
            if pr.status == "failed" and pr.reason and pr.reason not in failures and pr.localization is None:
                out.print(f"  [yellow]{escape(pr.label)}:[/] {escape(pr.reason)}", highlight=False, soft_wrap=True)
    for pr in report.providers:
        if pr.localization is not None:
            render_localization(pr.localization, out)


def render_localization(loc: Any, out=None) -> None:
    """The first divergence of one provider, the lines to read first at the top."""
    from rich.markup import escape
    from rich.table import Table

    out = out or console
    case = loc.case
    title = f"first divergence on {loc.provider} ({case.get('shape')} sample {case.get('sample')}, {case.get('output')})"
    if loc.provider_specific:
        title += ": provider-specific"
    if not loc.found:
        out.print(f"[bold]{escape(title)}[/]: {escape(loc.summary)}", highlight=False, soft_wrap=True)
        return
    table = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    rows = [("module", f"{loc.module or '(root)'} ({loc.class_name})"),
            ("node", f"{loc.node} ({loc.op_type})" if loc.node else None)]
    if loc.source is not None:
        src = f"{loc.source.where}" + (f"  {loc.source.code}" if loc.source.code else "")
        if loc.source.user_frame:
            src += f"  (called from {loc.source.user_frame})"
        rows.append(("source", src))
    rows.append(("origin", f"{loc.origin}: {loc.origin_detail}" if loc.origin else loc.origin_detail))
    if loc.first is not None:
        rows.append(("diff", loc.first.problem or f"max abs {loc.first.max_abs_diff:.3g}, {loc.first.outside}/"
                     f"{loc.first.elements} elements outside, {loc.first.tolerance_ratio:.3g}x tolerance"))
    for w in loc.weights[:2]:
        rows.append(("weight", f"initializer {w['initializer']} vs parameter {w['parameter']}: max abs "
                               f"{w['max_abs_diff']:.3g}, relative {w['max_rel_diff']:.3g}"))
    if loc.graph_only_modules or loc.eager_only_modules:
        rows.append(("branch", f"ONNX runs {', '.join(loc.graph_only_modules) or '-'}; eager ran "
                               f"{', '.join(loc.eager_only_modules) or '-'}"))
    if loc.branch_lines:
        rows.append(("branches", "if/while at line " + ", ".join(map(str, loc.branch_lines))))
    if loc.rows is not None:
        bad = loc.rows["diverging"]
        text = f"{len(bad)} of {loc.rows['size']}: {', '.join(map(str, bad[:12]))}" + (" ..." if len(bad) > 12 else "")
        rows.append(("rows", text + (f"; {loc.rows['common']}" if loc.rows.get("common") else "")))
    if loc.positions is not None:
        rows.append(("positions", f"from {loc.positions['first']} of {loc.positions['size']} (axis 1)"))
    if loc.trail:
        rows.append(("grows", " -> ".join(p.text() for p in loc.trail)))
    rows.append(("searched", f"{loc.compared_modules} modules in {loc.chunks} chunk(s), {loc.duration_s:.2f} s"
                 + (", weights shared with the eager model" if loc.session_weights == "shared" else "")))
    for key, value in rows:
        if value:
            table.add_row(key, escape(value))
    out.print(table)


def _provider_cell(status: str) -> str:
    return {"skipped": "[dim]skipped[/]", "error": "[bold red]ERROR[/] load",
            "passed": "[green]pass[/]"}.get(status, "[bold red]FAIL[/]")


def _case_cell(case: Any) -> str:
    """A short verdict; the full reason is listed under the table."""
    if case.status == "passed":
        return "[green]pass[/]"
    if case.status == "error":
        return "[bold red]ERROR[/] run"
    stats = case.stats
    kinds = [p.split()[0] for p in stats.problems] if stats is not None else []
    if (case.reason or "").startswith("not compared: constant output"):
        kinds.insert(0, "constant")
    if stats is not None and stats.nan_inf_mismatch:
        kinds.append("NaN/Inf")
    if stats is not None and stats.outside > stats.nan_inf_mismatch:
        kinds.append("values")
    if stats is not None and stats.cosine_failed:
        kinds.append("cosine")
    return "[bold red]FAIL[/] " + ", ".join(kinds)


def _placement_line(pr: Any) -> str:
    from onnxtax.parity.report import placement_text

    if pr.placement is None:
        return pr.reason or pr.status
    return placement_text(pr.placement)


def _verdict(report: Any, out) -> None:
    providers = [p for p in report.providers if p.status != "skipped"]
    n_out = len(report.outputs)
    n_samples = sum(s.samples for s in report.shapes)
    scope = (f"{len(providers)} provider(s) x {len(report.shapes)} shape(s) x {n_out} output(s), "
             f"{n_samples} sample(s), |a-b| <= {report.atol:g}*rms + {report.rtol:g}*|b|"
             + (f", cosine >= {report.min_cosine:g}" if report.min_cosine is not None else ""))
    if report.passed:
        out.print(f"[bold green]parity passed[/]: {scope}", highlight=False, soft_wrap=True)
    else:
        failed = sum(1 for c in report.cases if not c.passed)
        what = f"{len(report.failures)} failure(s)" + (f", {failed} of {len(report.cases)} cases" if failed else "")
        out.print(f"[bold red]parity FAILED[/]: {what} ({scope})", highlight=False, soft_wrap=True)
