"""`onnxtax --help` and every command's --help stay light: no torch, onnx, onnxruntime or numpy, and
no command module but the one asked for (the top-level help imports none)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from onnxtax.cli import app
from onnxtax.cli._app import COMMANDS

# pydantic: typer coerces a group's -h flag through it unless onnxtax.cli._app.Group gives it a default
HEAVY = ("torch", "onnx", "onnxruntime", "numpy", "onnxscript", "pydantic")

PROBE = """
import sys, runpy
sys.argv = ["onnxtax", *{args!r}]
try:
    runpy.run_module("onnxtax", run_name="__main__")
except SystemExit as exc:
    code = exc.code
print("CLI:" + ",".join(sorted(m for m in sys.modules if m.startswith("onnxtax.cli."))))
print("HEAVY:" + ",".join(m for m in {heavy!r} if m in sys.modules))
"""

# Modules every command's help may import: the shared app, and the help texts of the common
# arguments (SPEC_ARG, INPUT_HELP, ...), which live with the export command.
SHARED = {"onnxtax.cli._app", "onnxtax.cli.export"}


def _walk(group, path: list[str]):
    """Every (argv path, click command) under `group`, nested groups (`ci report merge`) included."""
    for name, cmd in group.commands.items():
        yield [*path, name], cmd
        if hasattr(cmd, "commands"):
            yield from _walk(cmd, [*path, name])


def command_tree() -> list[tuple[list[str], object]]:
    import typer.main

    return list(_walk(typer.main.get_command(app), []))


def commands() -> list[list[str]]:
    return [[]] + [argv for argv, _ in command_tree()]


@pytest.mark.parametrize("argv", commands(), ids=lambda a: " ".join(a) or "onnxtax")
def test_help_imports_only_what_it_shows(argv):
    proc = subprocess.run([sys.executable, "-c", PROBE.format(args=[*argv, "--help"], heavy=HEAVY)],
                          capture_output=True, text=True, timeout=60)
    assert "Usage" in proc.stdout, proc.stderr
    loaded = proc.stdout.rsplit("HEAVY:", 1)[1].strip()
    assert loaded == "", f"`onnxtax {' '.join(argv)} --help` imported {loaded}"
    cli_modules = set(proc.stdout.rsplit("CLI:", 1)[1].split("\n", 1)[0].split(",")) - {""}
    if not argv:
        assert cli_modules == {"onnxtax.cli._app"}, f"`onnxtax --help` imported {sorted(cli_modules)}"
    else:
        others = cli_modules - SHARED - {COMMANDS[argv[0]][0]}
        assert not others, f"`onnxtax {' '.join(argv)} --help` imported {sorted(others)}"


def test_nested_groups_are_walked():
    """`report merge` is a command of the `report` group: its --help and its options' help are checked."""
    assert ["report", "merge"] in [argv for argv, _ in command_tree()]


def test_every_command_and_option_has_help_text():
    import typer.main

    assert {"export", "verify", "providers"} <= set(typer.main.get_command(app).commands)
    for argv, cmd in command_tree():
        name = " ".join(argv)
        assert (cmd.help or "").strip(), f"command {name} has no help"
        for param in cmd.params:
            if param.name == "help":
                continue
            assert (getattr(param, "help", None) or "").strip(), f"{name} {param.name} has no help"
