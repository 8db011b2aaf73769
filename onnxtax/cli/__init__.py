"""Command-line interface: a thin Typer layer over the library API.

Each command lives in its own module and registers itself on `app`. No module
here imports torch, onnx or onnxruntime at import time.
"""

from __future__ import annotations

from onnxtax.cli._app import app
from onnxtax.cli import export as _export  # noqa: F401  (registers export, verify, providers)

for _name in ("parity", "lint", "bench", "ci"):
    try:
        __import__(f"onnxtax.cli.{_name}")
    except ModuleNotFoundError as _exc:  # a command module not written yet
        if _exc.name != f"onnxtax.cli.{_name}":
            raise


def main() -> None:
    app()


__all__ = ["app", "main"]
