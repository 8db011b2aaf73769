"""`onnxtax ci` and `onnxtax report merge`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from onnxtax.cli._app import (DEBUG_HELP, EXIT_CODES_HELP, Group, app, check_files, err_console, json_option,
                              print_error, progress_display, summary_console, user_errors, write_json_report)
from onnxtax.core.errors import EXIT_CHECK_FAILED, EXIT_OK

STYLES = {"passed": "green", "failed": "bold red", "error": "bold red", "not_run": "dim", "off": "dim",
          "fell_back": "yellow", "not_available": "dim", "conflict": "bold magenta"}
MARKS = {"passed": "pass", "failed": "FAIL", "error": "ERROR", "not_run": "not run", "off": "-",
         "fell_back": "fell back", "not_available": "n/a", "conflict": "CONFLICT"}

report_app = typer.Typer(name="report", help="Work with the reports `onnxtax ci` writes.", no_args_is_help=True,
                         add_completion=False, rich_markup_mode="rich", cls=Group,
                         context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(report_app, name="report")


def _cell(status: str, text: str = "") -> str:
    from rich.markup import escape
    label = MARKS.get(status, status)
    return f"[{STYLES.get(status, '')}]{label}[/]" + (f" {escape(text)}" if text else "")


@app.command(epilog=EXIT_CODES_HELP + " A model that cannot be built or a provider this host lacks (without "
             "--skip-unavailable) is recorded and the run goes on; the exit code is then 2.")


def ci(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="onnxtax.toml, or a pyproject.toml with "
                                                   "[tool.onnxtax]. Default: searched from the current folder "
                                                   "upward.", show_default=False)] = None,
    only: Annotated[list[str], typer.Option("--only", help="Run only this model (a [models.NAME] table); "
                                            "repeatable.", show_default=False, metavar="NAME")] = [],  # noqa: B006
    reports: Annotated[Optional[Path], typer.Option(help="Folder for the reports (NAME.json, junit.xml, "
                                                    "lint.sarif, summary.md, host.json, ci.json). Default: the "
                                                    "config's `reports`, else onnxtax-reports/ beside the config.",
                                                    show_default=False)] = None,
    keep_going: Annotated[Optional[bool], typer.Option("--keep-going/--fail-fast", help="After a failing model, "
                                                       "go on with the next (default) or stop; the config's "
                                                       "`fail_fast` sets the default.", show_default=False)] = None,
    provider: Annotated[list[str], typer.Option("--provider", "-p", help="Replace every model's parity (and "
                                                "bench) providers, e.g. -p cuda -p tensorrt; repeatable. Providers "
                                                "named here must be on this host (exit 2 otherwise) unless "
                                                "--skip-unavailable is given too.", show_default=False,
                                                metavar="PROVIDER")] = [],  # noqa: B006
    skip_unavailable: Annotated[bool, typer.Option("--skip-unavailable", help="Report providers this host lacks "
                                                   "as not available instead of exit 2 (overrides the config).")
                                ] = False,
    no_bench: Annotated[bool, typer.Option("--no-bench", help="Skip the configured benchmarks (bench and serve).")] = False,
    reuse_artifacts: Annotated[bool, typer.Option("--reuse-artifacts", help="Test the artifact already at each "
                                                  "model's output (with its manifest; e.g. downloaded from the job "
                                                  "that exported it) instead of exporting again, so every host "
                                                  "checks the same bytes. Models without one are exported.")
                               ] = False,
    host_label: Annotated[Optional[str], typer.Option(help="This host's name in merged matrices (`onnxtax report "
                                                      "merge`). Default: hostname and onnxruntime package.",
                                                      show_default=False)] = None,
    json_out: Annotated[Optional[str], json_option()] = None,
    debug: Annotated[bool, typer.Option("--debug", help=DEBUG_HELP)] = False,
) -> None:
    """Gate a release: export -> lint-ops -> parity (every configured provider) -> manifest verify
    (-> bench, when configured) for every model in the config, with JUnit, SARIF, JSON and
    markdown reports. Appends the summary to $GITHUB_STEP_SUMMARY when set. Each model's
    `spec` file is run (imported) to build the model: give only configs and files you trust."""
    from rich.markup import escape
    out = summary_console(json_out)
    with user_errors(debug):
        from onnxtax.ci import load_config, run_ci
        from onnxtax.ci.run import planned_files

        cfg = load_config(config)
        selected = cfg.select(only)
        # run_ci's own check, with --json: not the config, a model's file or one of the reports (it lists
        # $GITHUB_STEP_SUMMARY itself)
        planned_files(cfg, selected, reports if reports is not None else cfg.reports).write(json_out, "--json").check()
        out.print(f"[bold]onnxtax ci[/]: {len(selected)} model{'s' if len(selected) != 1 else ''} from "
                  f"{escape(str(cfg.path))}", highlight=False)
        with _CiProgress(json_out == "-", len(selected)) as progress:
            report = run_ci(cfg, only=only or None, reports_dir=reports, keep_going=keep_going,
                            providers=provider or None, skip_unavailable=True if skip_unavailable else None,
                            bench=not no_bench, host_label=host_label, reuse_artifacts=reuse_artifacts,
                            debug=debug,
                            on_stage=progress.stage, on_message=progress.message)
    with user_errors(debug):
        write_json_report(report.to_dict(), json_out)
    _render_summary(report, out)
    if debug:
        for run in report.models:
            for stage in run.stages.values():
                if stage.traceback:
                    err_console.print(stage.traceback, markup=False, highlight=False)
    raise typer.Exit(report.exit_code)


class _CiProgress:
    """One line per finished stage (kept in CI logs) under the shared progress bar (terminals
    only), counting models."""

    def __init__(self, to_stderr: bool, total: int):
        self.display = progress_display("models", to_stderr=to_stderr)
        self.total = total
        self.seen: list[str] = []
        self.width = 8

    def __enter__(self) -> "_CiProgress":
        self.display.__enter__()
        return self

    def stage(self, model: str, stage: str, result: Any) -> None:
        from rich.markup import escape

        from onnxtax.ci.run import STAGE_TITLES

        self.width = max(self.width, len(model))
        if model not in self.seen:
            self.seen.append(model)
        if result is None:
            self.display(f"{model} › {STAGE_TITLES[stage]}", len(self.seen) - 1, self.total)
        else:
            from onnxtax.core.memory import format_bytes

            peak = f"  [dim](peak {format_bytes(result.memory.peak_rss_bytes)})[/]" if result.memory else ""
            self.display.print(f"{escape(model):{self.width}}  {STAGE_TITLES[stage]:15} {_cell(result.status)}"
                               f"  {result.seconds:5.1f} s  {escape(result.summary)}{peak}",
                               highlight=False, soft_wrap=True)

    def message(self, model: str, stage: str, message: str) -> None:
        from onnxtax.ci.run import STAGE_TITLES

        self.display(f"{model} › {STAGE_TITLES[stage]}: {message}", len(self.seen) - 1, self.total)

    def __exit__(self, *exc: object) -> None:
        self.display.__exit__(*exc)


def _render_summary(report: Any, out: Any) -> None:
    from rich.table import Table
    from rich.markup import escape
    from onnxtax.ci.run import STAGE_TITLES, STAGES
    from onnxtax.ci import peak_cell

    table = Table(title="onnxtax ci", title_justify="left", header_style="bold")
    table.add_column("model", overflow="fold")
    for s in STAGES:
        table.add_column(s, no_wrap=True)
    table.add_column("providers", overflow="fold")
    table.add_column("peak memory", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    for run in report.models:
        cells = [_cell(run.stages[s].status) if s in run.stages else "" for s in STAGES]
        shorts = [p.label.split(":")[0] for p in run.providers]
        provs = ", ".join(f"{escape(short if shorts.count(short) == 1 else p.label)} {_cell(p.verdict)}"
                          for short, p in zip(shorts, run.providers))
        table.add_row(escape(run.name), *cells, provs, peak_cell(run), f"{run.seconds:.1f} s")
    out.print(table)
    for run in report.models:
        stage = run.first_problem
        if stage is None:
            continue
        label = f"{run.name} {STAGE_TITLES[stage.name]} " + ("failed" if stage.status == "failed" else "error")
        print_error(stage.error or stage.summary or stage.status, stage.hint, label=label)
    n = len(report.models)
    counts = report.to_dict()["counts"]
    verdict = (f"[bold green]passed[/]: {n} model{'s' if n != 1 else ''}" if report.passed else
               "[bold red]failed[/]: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items() if v))
    out.print(f"onnxtax ci {verdict} in {report.seconds:.1f} s", highlight=False)
    if report.reports_dir:
        names = ", ".join(Path(f).name for f in report.files)
        out.print(f"reports: {escape(report.reports_dir)} ({escape(names)})", highlight=False, soft_wrap=True)


@report_app.command("merge", epilog="Exit codes: 0 every run finished and passed and no verdicts conflict; 1 a "
                    "run was interrupted, failed or errored (its ci.json), a folder of model reports has no ci.json, "
                    "or the same artifact passed on one host and failed on another for the same provider; 2 no "
                    "reports found, or a report that cannot be read or has wrong types (named).")


def merge(
    folders: Annotated[list[Path], typer.Argument(help="Report folders written by `onnxtax ci --reports` (searched "
                                                  "recursively, e.g. downloaded CI artifacts), one or more.",
                                                  show_default=False)],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write matrix.json and matrix.md here.",
                                                   show_default=False)] = None,
    json_out: Annotated[Optional[str], json_option()] = None,
    debug: Annotated[bool, typer.Option("--debug", help=DEBUG_HELP)] = False,
) -> None:
    """Combine `onnxtax ci` runs from several hosts into one model x provider matrix:
    passed, fell back, failed, not available, not run, per host; conflicting verdicts
    flagged. Appends the matrix to $GITHUB_STEP_SUMMARY when set."""
    from rich.markup import escape
    with user_errors(debug):
        from onnxtax.ci.merge import merge_reports, write_matrix
        from onnxtax.core.paths import PlannedFiles
        from onnxtax.core.report import append_github_summary

        files = PlannedFiles().write(json_out, "--json")
        if output is not None:
            files.write(output, "--output", folder=True)
            files.write(output / "matrix.json", "--output (matrix.json)", probe=False)
            files.write(output / "matrix.md", "--output (matrix.md)", probe=False)
        for folder in folders:
            for report_file in (folder.rglob("*.json") if folder.is_dir() else []):
                files.read(report_file, "a report being merged")
        check_files(files)
        matrix = merge_reports(folders)
    out = summary_console(json_out)
    with user_errors(debug):
        write_json_report(matrix.to_dict(), json_out)
    _render_matrix(matrix, out)
    with user_errors(debug):
        written = write_matrix(matrix, output) if output else []
        append_github_summary(matrix.markdown())
    if written:
        out.print(f"wrote {', '.join(escape(str(p)) for p in written)}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_OK if matrix.passed else EXIT_CHECK_FAILED)


def _render_matrix(matrix: Any, out: Any) -> None:
    from rich.table import Table
    from rich.markup import escape
    hosts = [h.label for h in matrix.hosts]
    table = Table(title="provider matrix", title_justify="left", header_style="bold")
    table.add_column("model")
    table.add_column("provider")
    for h in hosts:
        table.add_column(escape(h))
    table.add_column("verdict")
    for row in matrix.rows:
        cells = [_cell(row.cells[h]["verdict"]) if h in row.cells else "" for h in hosts]
        table.add_row(escape(row.model), escape(row.provider), *cells, _cell(row.verdict))
    out.print(table)
    from onnxtax.render.verify import signatures_table

    signatures_table(matrix.signatures, hosts, out)
    for c in matrix.conflicts:
        print_error(f"{c.model} on {c.provider} (artifact {(c.artifact_sha256 or '')[:12]}): passed on "
                    f"{', '.join(c.passed_on)}, failed on {', '.join(c.failed_on)}", label="conflict")
    for h in matrix.hosts:
        bad = [name for name, rep in h.models.items() if rep.get("status") != "passed"]
        if bad:
            out.print(f"[red]{escape(h.label)}[/]: {escape(', '.join(bad))} did not pass", highlight=False)
        for problem in h.problems:
            out.print(f"[red]{escape(h.label)}[/]: {escape(problem)} ({escape(h.source)})", highlight=False,
                      soft_wrap=True)
    for note in matrix.notes:
        out.print(f"[dim]note: {escape(note)}[/]", highlight=False, soft_wrap=True)
    verdict = "[bold green]passed[/]" if matrix.passed else "[bold red]failed[/]"
    out.print(f"merged {len(hosts)} host run{'s' if len(hosts) != 1 else ''}: {verdict}", highlight=False)
