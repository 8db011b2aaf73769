"""Command-line interface: a thin Typer layer over the library API.

Each command lives in its own module and registers itself on `app`; `_app.COMMANDS` names the
module, which is imported only when its command runs or shows its help. No module here imports
torch, onnx or onnxruntime at import time.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from onnxtax.cli._app import app
from onnxtax.core.errors import EXIT_SIGINT, EXIT_SIGTERM, Terminated


_terminated = False


def _on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM raises Terminated (a KeyboardInterrupt) where the program is, so every
    `finally` runs as on Ctrl-C. Once only: a second SIGTERM must not cut the clean-up short."""
    global _terminated
    _terminated = True
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _raise_when_safe(frame)


def _raise_when_safe(frame: Any) -> None:
    """Not inside an import: a module's C++ initialisation (onnx's, through nanobind) that
    calls back into Python cannot carry an exception and aborts the process (exit 134,
    nothing cleaned up). Then retry every 50 ms until the import is done."""
    if _in_import(frame):
        signal.signal(signal.SIGALRM, lambda _signum, later: _raise_when_safe(later))
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        return
    raise Terminated()


def _in_import(frame: Any) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def main() -> None:
    """Run the app. Once torch is loaded, its interpreter teardown costs ~0.6 s for nothing
    (every output is written and flushed by then), so the process ends at once."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        app()
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    if _terminated and code == EXIT_SIGINT:
        code = EXIT_SIGTERM  # Typer turns an interrupt outside a command's own handling into 130
    if "torch" in sys.modules:
        import logging

        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(code)


__all__ = ["app", "main"]
