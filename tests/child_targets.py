"""Functions tests/test_child.py runs in a child interpreter (kept free of pytest, so each
child starts in a fraction of a second)."""

from __future__ import annotations

import os
import sys
import time

from onnxtax.core import CheckFailed


def echo(request: dict) -> dict:
    return {"got": request, "pid": os.getpid()}


def refuse(request: dict) -> dict:
    raise CheckFailed(f"refused {request['what']}", "ask for something else")


def sleep_past(request: dict) -> dict:
    time.sleep(request["seconds"])
    return {}


def abort_like_cpp(request: dict) -> dict:
    print("noise on stdout")
    sys.stderr.write("terminate called after throwing an instance of 'ov::Exception'\n"
                     "  what():  Exception from src/core/graph.cpp:12: the graph has a cycle\n")
    sys.stderr.flush()
    os.abort()


def exit_without_result(request: dict) -> dict:
    sys.stderr.write("RuntimeError: gave up\n")
    sys.exit(3)


def onnxtax_file(request: dict) -> str:
    import onnxtax

    return onnxtax.__file__
