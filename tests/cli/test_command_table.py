"""The command table (`onnxtax.cli._app.COMMANDS`) that lets `onnxtax --help` list the commands
without importing their modules: it must name every command, in the module that defines it, with
the same short help the command's own docstring gives."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys

import pytest
import typer.main
from typer.core import TyperCommand

import onnxtax.cli
from onnxtax.cli import app
from onnxtax.cli._app import COMMANDS, LazyGroup


def _all_commands() -> dict:
    """Every command every module under onnxtax/cli registers, built the eager way."""
    for module in pkgutil.iter_modules(onnxtax.cli.__path__):
        importlib.import_module(f"onnxtax.cli.{module.name}")
    return dict(typer.main.get_command(app).commands.items())


def test_table_names_every_command_in_the_module_that_defines_it():
    commands = _all_commands()
    assert list(commands) == list(COMMANDS), "a command is missing from COMMANDS (or listed twice)"
    for name, command in commands.items():
        callbacks = [command.callback] if not hasattr(command, "commands") else []
        callbacks += [sub.callback for sub in getattr(command, "commands", {}).values()]
        for callback in callbacks:
            assert callback.__wrapped__.__module__ == COMMANDS[name][0], name


@pytest.mark.parametrize("name", list(COMMANDS))
def test_table_summary_is_the_commands_short_help(name):
    """The summary must give what the docstring gives at every terminal width (click shortens the
    first sentence to the width left), so it may not drift from the docstring."""
    real = _all_commands()[name]
    stand_in = TyperCommand(name, help=COMMANDS[name][1])
    for limit in range(10, 400):
        assert stand_in.get_short_help_str(limit) == real.get_short_help_str(limit), (name, limit)


HELP = """
import importlib, pkgutil, runpy, sys
import onnxtax.cli
if {eager}:
    for module in pkgutil.iter_modules(onnxtax.cli.__path__):
        importlib.import_module("onnxtax.cli." + module.name)
sys.argv = ["onnxtax", "--help"]
runpy.run_module("onnxtax", run_name="__main__")
"""


@pytest.mark.parametrize("columns", ["50", "120"])  # click caps the help at 80 columns
def test_top_level_help_from_the_table_is_the_eager_help(columns):
    """`onnxtax --help` (no command module imported: the listing comes from the table) prints
    what it prints with every module imported first (every command built)."""
    lazy, eager = (subprocess.run([sys.executable, "-c", HELP.format(eager=eager)], capture_output=True, text=True,
                                  timeout=60, env={**os.environ, "COLUMNS": columns}) for eager in (False, True))
    assert lazy.returncode == eager.returncode == 0, lazy.stderr + eager.stderr
    assert lazy.stdout == eager.stdout
    assert "  runtimes " in lazy.stdout


def test_unknown_command_is_a_usage_error_with_suggestions(cli):
    proc = cli("repor")
    assert proc.returncode == 2
    assert "No such command 'repor'. Did you mean 'report', 'export'?" in proc.stderr


def test_a_command_is_built_only_when_looked_up():
    group = typer.main.get_command(app)
    assert isinstance(group, LazyGroup)
    fresh = LazyGroup(name="onnxtax", commands={})
    assert list(fresh.commands) == list(COMMANDS) and fresh.commands.built == {}
    assert fresh.get_command(None, "parity").name == "parity"
    assert list(fresh.commands.built) == ["parity"]
    assert fresh.get_command(None, "nope") is None
