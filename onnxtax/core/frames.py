"""Which frame of a stack is the user's: the file:line shown for a failed import, a failed
export, a lint finding from tracing, or a node's stack trace recorded by the exporter.

One rule everywhere: the innermost frame in the user's code. A frame is the user's when it
is outside torch, onnxscript, onnxtax, installed packages, the standard library and
generated code (`<eval_with_key>`, `<frozen ...>`), or when it lies in the folder of the
model's own file (its package counts even when installed in site-packages). Innermost,
because a problem in a helper that forward() calls is fixed in the helper, not at the call.
"""

from __future__ import annotations

import linecache
import os
import re
import sysconfig
import traceback
from dataclasses import dataclass

_IN_TEXT = re.compile(r'File "([^"]+)", line (\d+)')
_LIBRARY = re.compile(r"site-packages|dist-packages|[/\\]torch[/\\]|[/\\]onnxscript[/\\]|[/\\]onnxtax[/\\]|^<")
_STDLIB = tuple({os.path.realpath(p) + os.sep for p in (sysconfig.get_paths()["stdlib"],
                                                        sysconfig.get_paths()["platstdlib"])})


@dataclass(frozen=True)
class Frame:
    file: str
    line: int

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def code(self) -> str:
        """The source line, stripped ("" when the file cannot be read)."""
        return linecache.getline(self.file, self.line).strip()


def frames_in_text(text: str | None) -> list[Frame]:
    """Frames of a stack trace printed as text ('File "x.py", line 8'), outermost first."""
    return [Frame(f, int(n)) for f, n in _IN_TEXT.findall(text or "")]


def frames_of(exc: BaseException) -> list[Frame]:
    """The traceback of an exception, outermost first."""
    return [Frame(fr.filename, fr.lineno or 0) for fr in traceback.extract_tb(exc.__traceback__)]


def is_library(path: str) -> bool:
    """Code the user did not write: torch, onnxscript, onnxtax, installed packages, the
    standard library, generated code."""
    if _LIBRARY.search(path or "<"):
        return True
    real = os.path.realpath(path)
    return real.startswith(_STDLIB)


def user_frame(frames: list[Frame], user_file: str | None = None) -> Frame | None:
    """The innermost user frame of `frames` (outermost first), or None. `user_file` is the
    model's file: frames in its folder are the user's even inside site-packages (a virtualenv
    inside that folder is not)."""
    home = os.path.dirname(os.path.realpath(user_file)) + os.sep if user_file else None

    def is_user(path: str) -> bool:
        if not is_library(path):
            return True
        real = os.path.realpath(path)
        return bool(home) and real.startswith(home) and not _LIBRARY.search(real[len(home):])

    mine = [f for f in frames if is_user(f.file)]
    return mine[-1] if mine else None
