"""`onnxtax --help` and every command's --help stay light: no torch, onnx, onnxruntime or numpy."""

from __future__ import annotations

import subprocess
import sys

import pytest

from onnxtax.cli import app

HEAVY = ("torch", "onnx", "onnxruntime", "numpy", "onnxscript")

PROBE = """
import sys, runpy
sys.argv = ["onnxtax", *{args!r}]
try:
    runpy.run_module("onnxtax", run_name="__main__")
except SystemExit as exc:
    code = exc.code
print("HEAVY:" + ",".join(m for m in {heavy!r} if m in sys.modules))
"""


def commands() -> list[list[str]]:
    import typer.main

    group = typer.main.get_command(app)
    out = [[]]
    for name, cmd in group.commands.items():
        out.append([name])
        for sub in getattr(cmd, "commands", {}):
            out.append([name, sub])
    return out


@pytest.mark.parametrize("argv", commands(), ids=lambda a: " ".join(a) or "onnxtax")
def test_help_imports_no_heavy_module(argv):
    proc = subprocess.run([sys.executable, "-c", PROBE.format(args=[*argv, "--help"], heavy=HEAVY)],
                          capture_output=True, text=True, timeout=60)
    assert "Usage" in proc.stdout, proc.stderr
    loaded = proc.stdout.rsplit("HEAVY:", 1)[1].strip()
    assert loaded == "", f"`onnxtax {' '.join(argv)} --help` imported {loaded}"


def test_every_command_has_help_text():
    import typer.main

    group = typer.main.get_command(app)
    assert {"export", "verify", "providers"} <= set(group.commands)
    for name, cmd in group.commands.items():
        assert (cmd.help or "").strip(), f"command {name} has no help"
        for param in cmd.params:
            if param.name not in ("help",) and getattr(param, "help", None) is not None:
                assert param.help.strip(), f"{name} {param.name} has empty help"
