"""The Typer app and what every command shares: error handling, exit codes, consoles.

Nothing here imports torch, onnx or onnxruntime: `onnxtax --help` stays fast.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import MutableMapping
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

from onnxtax.core.errors import EXIT_CHECK_FAILED, EXIT_OK, EXIT_SIGINT, EXIT_USAGE, CheckFailed, OnnxtaxError

EXIT_CODES_HELP = (
    f"Exit codes: {EXIT_OK} passed; {EXIT_CHECK_FAILED} a check failed (export checks, opset lock, "
    f"parity, lint, benchmark gate, checksum, signature); {EXIT_USAGE} usage, config or input error."
)

# Every command: the module that defines it (imported only when the command runs or shows its own
# help) and the first sentence of its docstring, which is all the top-level help shows of it (click
# cuts a command's help at its first sentence). A test checks both against the modules.
COMMANDS: dict[str, tuple[str, str]] = {
    "export": ("onnxtax.cli.export", "Export a PyTorch model to ONNX with the opset locked, dynamic axes kept, "
               "the checker and an ONNX Runtime run passed, and a manifest with checksums."),
    "verify": ("onnxtax.cli.export", "Check the artifact: with --key its signature first, then every checksum in "
               "the manifest, then the provenance it records, in words: 0 all pass, 1 a signature or file fails (a "
               "changed byte, a file added or removed, another key, a damaged signature, a file outside the folder) "
               "or an unsigned artifact with --require-signature, 2 no manifest or a bad key."),
    "sign": ("onnxtax.cli.sign", "Sign the artifact's files (the .onnx, its external data, its manifest and a "
             "provenance statement) with OpenSSF model signing and a private key: NAME.sig and NAME.provenance.json "
             "beside it, the key's fingerprint in the manifest."),
    "providers": ("onnxtax.cli.export", "The execution providers the installed onnxruntime can use on this host."),
    "bench": ("onnxtax.cli.bench", "Measure the Python tax: PyTorch eager vs ONNX Runtime on each provider, latency "
              "percentiles and throughput per batch size, cold start and peak memory in fresh processes; gate "
              "on latency or speedup."),
    "ci": ("onnxtax.cli.ci", "Gate a release: export -> lint-ops -> parity (every configured provider) -> manifest "
           "verify (-> bench, when configured) for every model in the config, with JUnit, SARIF, JSON and "
           "markdown reports."),
    "lint-ops": ("onnxtax.cli.lint", "Find what will not run, or not run the same, where the model is deployed: "
                 "control flow, custom ops, opset/IR above the target, provider fallback, float64, baked shapes; "
                 "with --source, data-dependent Python code at its file:line."),
    "parity": ("onnxtax.cli.parity", "Check that MODEL.onnx computes what the eager PyTorch model computes, in FP32, "
               "on every provider, at several sizes of every dynamic axis, on seeded random and real samples."),
    "quantize": ("onnxtax.cli.quantize", "Quantize MODEL.onnx to INT8 and write it only if every data segment stays "
                 "within every budget against the FP32 eager model, rows run one at a time and in batches."),
    "runtimes": ("onnxtax.cli.runtimes", "Load and run ONNX_MODEL on each listed onnxruntime release (each in its own "
                 "cached virtualenv) and compare with the eager model at parity's shapes and samples: per release "
                 "and provider, loads or not (in the runtime's own words), values pass or fail; the lowest release "
                 "that passes."),
    "serve-bench": ("onnxtax.cli.serve", "Serve the model under open-loop load on each path (eager PyTorch, ONNX "
                    "Runtime in Python, ONNX Runtime in Node.js) with a micro-batching policy, and report the load "
                    "each sustains within a latency SLO, its latency percentiles, memory, cores, cold start and "
                    "cost; check every host's outputs against the eager model; gate on load or p99."),
    "report": ("onnxtax.cli.ci", "Work with the reports `onnxtax ci` writes."),
}


def build_command(name: str):
    """The click command for `name` alone, from what its module registered on `app` (through typer's
    public get_command: building a command evaluates its whole signature, ~10 ms each)."""
    importlib.import_module(COMMANDS[name][0])
    one = typer.Typer(rich_markup_mode=app.rich_markup_mode, pretty_exceptions_short=app.pretty_exceptions_short,
                      add_completion=False)
    one.registered_commands = [info for info in app.registered_commands
                               if (info.name or info.callback.__name__.lower().replace("_", "-")) == name]
    one.registered_groups = [info for info in app.registered_groups if info.name == name]
    built = typer.main.get_command(one)
    return built.commands[name] if one.registered_groups else built


class _LazyCommands(MutableMapping):
    """The top-level command table: every name in COMMANDS (so listing, lookup and typer's
    "did you mean" need no import), each command built on its first lookup."""

    def __init__(self, built: dict):
        self.built = dict(built)  # commands whose modules were imported before the app ran

    def __getitem__(self, name: str):
        if name not in self.built:
            if name not in COMMANDS:
                raise KeyError(name)
            self.built[name] = build_command(name)
        return self.built[name]

    def __contains__(self, name: object) -> bool:
        return name in COMMANDS or name in self.built

    def __iter__(self) -> Iterator[str]:
        return iter([*COMMANDS, *(name for name in self.built if name not in COMMANDS)])

    def __len__(self) -> int:
        return len(set(COMMANDS) | set(self.built))

    def __setitem__(self, name: str, command) -> None:
        self.built[name] = command

    def __delitem__(self, name: str) -> None:
        del self.built[name]


class Group(TyperGroup):
    """Every group's class (`cls=`): typer leaves a group's -h flag None when it is not given and
    coerces None through a pydantic adapter, so `onnxtax CMD --help` imported pydantic (~0.2 s)."""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None and option.default is None:
            option.default = False
        return option


class LazyGroup(Group):
    """`onnxtax --help` lists the commands from COMMANDS and `onnxtax CMD` imports CMD's module
    only: importing every module and building every command cost ~0.1 s per call."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.commands = _LazyCommands(self.commands)

    def list_commands(self, ctx) -> list[str]:
        return list(self.commands)  # the names, without building the commands (typer's own builds them)

    def format_commands(self, ctx, formatter) -> None:
        """Typer's own listing, of stand-ins that carry each command's first sentence."""
        listing = {name: self.commands.built.get(name) or TyperCommand(name, help=COMMANDS[name][1])
                   for name in self.list_commands(ctx)}
        TyperGroup(commands=listing).format_commands(ctx, formatter)


def _no_options() -> None:
    """The top level has no options of its own: with this callback typer builds a group (LazyGroup)
    even when no command module has been imported yet."""


app = typer.Typer(
    name="onnxtax",
    help="PyTorch model -> verified ONNX artifact that ONNX Runtime serves natively.\n\n" + EXIT_CODES_HELP,
    cls=LazyGroup,
    callback=_no_options,
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
NOISE_FACTOR_HELP = ("k: atol and rtol are at least k times the model's own rounding noise (eager vs itself in "
                     "float64, relative to the output's RMS), for wide and deep layers and float16 models. Default 64 "
                     "(float16/bfloat16 outputs: 12); 0: the fixed --atol/--rtol alone.")
JSON_HELP = "Write the report as JSON to PATH; '-' prints it on stdout (the summary then goes to stderr)."


def json_option():
    """`--json PATH|-`, the same on every command."""
    return typer.Option("--json", help=JSON_HELP, show_default=False, metavar="PATH")


def write_json_report(data: object, json_out: str | None) -> None:
    """The report as JSON: on stdout for '-', else to the file through the one output writer."""
    if json_out == "-":
        print_json(data)
    elif json_out:
        from onnxtax.core.files import write_output
        from onnxtax.core.report import jsonable

        write_output(json_out, jsonable(data), "--json")


def summary_console(json_out: str | None):
    """Where the human summary goes: stderr when stdout carries the JSON."""
    return err_console if json_out == "-" else console


def check_files(files) -> None:
    """Before any work: every output writable and none of them an input (onnxtax.core.paths); when
    CI provides $GITHUB_STEP_SUMMARY, that too."""
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        files.write(summary, "$GITHUB_STEP_SUMMARY", append=True)
    files.check()


@contextmanager
def user_errors(debug: bool = False) -> Iterator[None]:
    """Turn OnnxtaxError (exit 2) and an escaped CheckFailed (exit 1) into a one-line message;
    bugs keep their traceback."""
    try:
        with memory_warnings_shown():
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


@contextmanager
def memory_warnings_shown() -> Iterator[None]:
    """A stage's memory preflight warning (onnxtax.core.memory.MemoryWarning) printed at once, every
    time, as `warning:` and `fix:`: an OOM-killed run prints nothing after it."""
    import warnings

    from onnxtax.core.memory import MemoryWarning

    with warnings.catch_warnings():
        previous = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if not issubclass(category, MemoryWarning):
                return previous(message, category, filename, lineno, file, line)
            from rich.markup import escape

            err_console.print(f"[bold yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
            if getattr(message, "advice", ""):
                err_console.print(f"  [yellow]fix:[/] {escape(message.advice)}", highlight=False, soft_wrap=True)

        warnings.simplefilter("always", MemoryWarning)
        warnings.showwarning = show
        yield


def print_memory(report: object, out=None) -> None:
    """`peak memory 2.95 GB (1.10x the 2.68 GB of weights)` after a stage's summary, when it measured it."""
    memory = getattr(report, "memory", None)
    if memory is not None:
        (out or console).print(f"[dim]{memory.line()}[/]", highlight=False)


def print_error(message: str, hint: str | None = None, label: str = "error") -> None:
    """`error: what is wrong` and `fix: what to do`, on stderr; user text is never read as markup."""
    from rich.markup import escape

    err_console.print(f"[bold red]{label}:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if hint:
        err_console.print(f"  [yellow]fix:[/] {escape(hint)}", highlight=False, soft_wrap=True)


def print_json(data: object) -> None:
    """JSON to stdout, nothing else on stdout (rich output goes to stderr in --json mode)."""
    import json

    from onnxtax.core.report import jsonable

    sys.stdout.write(json.dumps(jsonable(data), indent=2) + "\n")
    sys.stdout.flush()


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
