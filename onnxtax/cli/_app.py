"""The Typer app and what every command shares: error handling, exit codes, consoles.

Nothing here imports torch, onnx or onnxruntime: `onnxtax --help` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

import typer

from onnxtax.errors import EXIT_CHECK_FAILED, EXIT_OK, EXIT_SIGINT, EXIT_USAGE, CheckFailed, OnnxtaxError

EXIT_CODES_HELP = (
    f"Exit codes: {EXIT_OK} passed; {EXIT_CHECK_FAILED} a check failed (export checks, opset lock, "
    f"parity, lint, benchmark gate, checksum); {EXIT_USAGE} usage, config or input error."
)

app = typer.Typer(
    name="onnxtax",
    help="PyTorch model -> verified ONNX artifact that ONNX Runtime serves natively.\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rendering it with rich costs ~0.1 s of imports per call
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Width when the output is not a terminal (a CI log, a pipe) and COLUMNS is not set: rich would
# use 80 and fold a parity table of a large model into two characters per line.
NON_TERMINAL_WIDTH = 160


@lru_cache(maxsize=2)
def get_console(stderr: bool = False):
    """The real rich Console for stdout or stderr, built on first use: the one place that
    decides the width. A terminal gives its own; COLUMNS wins when set; otherwise (CI logs,
    pipes) NON_TERMINAL_WIDTH."""
    from rich.console import Console

    console = Console(stderr=stderr)
    columns = os.environ.get("COLUMNS", "")
    if not console.is_terminal and not (columns.isdigit() and int(columns) > 0):
        console = Console(stderr=stderr, width=NON_TERMINAL_WIDTH)
    return console


class _LazyConsole:
    """Stands for get_console(...) so that importing a command module (and `--help`)
    does not import rich's renderer. Pass `get_console()` itself where rich needs a
    real Console (Progress, Live)."""

    def __init__(self, stderr: bool = False):
        self._stderr = stderr

    def __getattr__(self, name: str):
        return getattr(get_console(self._stderr), name)

    def __enter__(self):
        return get_console(self._stderr).__enter__()

    def __exit__(self, *exc):
        return get_console(self._stderr).__exit__(*exc)


console = _LazyConsole()
err_console = _LazyConsole(stderr=True)

DEBUG_HELP = "Show full tracebacks and exporter logs."
JSON_HELP = "Print the result as JSON on stdout instead of the table."


@contextmanager
def user_errors(debug: bool = False) -> Iterator[None]:
    """Turn OnnxtaxError (exit 2) and an escaped CheckFailed (exit 1) into a one-line message;
    bugs keep their traceback."""
    try:
        yield
    except (OnnxtaxError, CheckFailed) as exc:
        if debug:
            traceback.print_exc()
        print_error(exc.message, exc.hint, label="error" if isinstance(exc, OnnxtaxError) else "check failed")
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt as exc:
        signal_name = getattr(exc, "signal_name", "SIGINT")
        err_console.print(f"[red]interrupted[/] ({signal_name})", highlight=False)
        raise typer.Exit(getattr(exc, "exit_code", EXIT_SIGINT)) from None


def print_error(message: str, hint: str | None = None, label: str = "error") -> None:
    """`error: what is wrong` and `fix: what to do`, on stderr; user text is never read as markup."""
    from rich.markup import escape

    err_console.print(f"[bold red]{label}:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if hint:
        err_console.print(f"  [yellow]fix:[/] {escape(hint)}", highlight=False, soft_wrap=True)


def print_json(data: object) -> None:
    """JSON to stdout, nothing else on stdout (rich output goes to stderr in --json mode)."""
    from onnxtax.report import jsonable

    sys.stdout.write(json.dumps(jsonable(data), indent=2) + "\n")
    sys.stdout.flush()


def status_console(json_mode: bool):
    """Where progress goes: stderr when stdout carries JSON."""
    return get_console(stderr=json_mode)


class progress_display:
    """The one progress renderer: a bar with the stage's current step on the console, only when
    that console is a terminal (CI logs get the summary, not frames). Refreshed by hand from the
    callbacks, never from a thread: the exporter redirects fds 1 and 2 while it runs, and a
    refresh thread writing then would desynchronise the terminal. Usable as a Progress."""

    def __init__(self, label: str, *, to_stderr: bool = True, min_interval: float = 0.1):
        self.label = label
        self.out = get_console(stderr=to_stderr)
        self.min_interval = min_interval
        self._bar = None
        self._last = 0.0

    def __enter__(self) -> "progress_display":
        if self.out.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

            self._bar = Progress(SpinnerColumn(), TextColumn(self.label), BarColumn(bar_width=24),
                                 MofNCompleteColumn(), TextColumn("{task.description}"), console=self.out,
                                 transient=True, auto_refresh=False)
            self._bar.start()
            self._task = self._bar.add_task("", total=None)
        return self

    def __call__(self, message: str, done: int | None = None, total: int | None = None) -> None:
        if self._bar is None:
            return
        import time

        from rich.markup import escape

        self._bar.update(self._task, description=escape(message), completed=done or 0, total=total)
        now = time.monotonic()
        if now - self._last >= self.min_interval or (total is not None and done == total):
            self._last = now
            self._bar.refresh()

    def print(self, *args, **kwargs) -> None:
        """A line that stays (above the bar on a terminal; as is in a log)."""
        (self._bar.console if self._bar is not None else self.out).print(*args, **kwargs)
        if self._bar is not None:
            self._bar.refresh()

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
