"""Run one function in a fresh interpreter and read its result back, whatever happens to it.

Two things need a process of their own: a cold start must pay imports and the first call
exactly as a new serving process does (bench), and a provider that aborts the process on
a model (ORT-OpenVINO `terminate`s on an If inside a Loop) must not take the caller with it
(lint's provider placement). Both use this one protocol:

- the parent runs `python -c STUB MODULE:FUNCTION REQUEST_JSON`; the stub takes a monotonic
  timestamp before anything else runs (CLOCK_MONOTONIC is system-wide on Linux, so the
  parent can subtract its own spawn time);
- the child calls FUNCTION(request) and prints one line, RESULT_MARKER + JSON, on stdout:
  {"value": ...} or {"error": {"type", "message", "hint"}}, with "started_ns";
- the parent turns what happened into a ChildResult: "ok", "error" (the function raised),
  "timeout" (killed after `timeout` seconds) or "crashed" (no result line: the exit code or
  signal and the last meaningful stderr line).

Only light standard-library modules are imported at the top (subprocess and signal, which
only the parent needs, inside its functions), so the child's own imports stay its own.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Literal

RESULT_MARKER = "ONNXTAX-CHILD-RESULT "

# The whole `-c` program: the first timestamp comes before any import.
STUB = ("import time; _t0 = time.monotonic_ns()\n"
        "from onnxtax.core.child import child_main\n"
        "child_main(_t0)\n")

ChildStatus = Literal["ok", "error", "timeout", "crashed"]


@dataclass
class ChildResult:
    """What became of one child run. Truthy when the function returned a value."""

    target: str
    status: ChildStatus
    value: Any = None  # the function's return value (JSON) when ok
    message: str = ""  # why not ok, one line
    error_type: str | None = None  # the exception class when the function raised
    hint: str | None = None  # the exception's hint (OnnxtaxError) when it had one
    exit_code: int | None = None
    signal: str | None = None  # e.g. "SIGABRT" when a signal ended the child
    stderr_tail: str = ""  # the last meaningful stderr line (a C++ `what():` line first)
    spawn_ns: int = 0  # parent's monotonic clock just before the spawn
    started_ns: int | None = None  # child's monotonic clock when the interpreter was ready
    seconds: float = 0.0

    def __bool__(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        return {"target": self.target, "status": self.status, "message": self.message,
                "error_type": self.error_type, "exit_code": self.exit_code, "signal": self.signal,
                "stderr_tail": self.stderr_tail, "seconds": round(self.seconds, 3)}


def run_in_child(target: str, request: dict, *, timeout: float, python: str | None = None,
                 env: dict[str, str] | None = None) -> ChildResult:
    """Call `target` ("package.module:function", taking and returning JSON-able values) with
    `request` in a new interpreter (`python`, default this one) and wait at most `timeout` s.
    The child imports the same onnxtax as this process, however this one found it."""
    import subprocess

    env = dict(os.environ if env is None else env)
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # holds the package
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    spawn = time.monotonic_ns()
    cmd = [python or sys.executable, "-c", STUB, target, json.dumps(request)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return ChildResult(target, "timeout", message=f"no result after {timeout:g} s (the child was killed)",
                           stderr_tail=last_stderr_line(stderr), spawn_ns=spawn,
                           seconds=(time.monotonic_ns() - spawn) / 1e9)
    seconds = (time.monotonic_ns() - spawn) / 1e9
    payload = _result_line(proc.stdout)
    if payload is None:
        code = proc.returncode
        sig = _signal_name(-code) if code < 0 else None
        tail = last_stderr_line(proc.stderr) or last_stderr_line(proc.stdout)
        how = f"signal {sig}" if sig else (f"exit code {code}" if code else "exit code 0 without a result")
        return ChildResult(target, "crashed", message=how + (f": {tail}" if tail else ""), exit_code=code,
                           signal=sig, stderr_tail=tail, spawn_ns=spawn, seconds=seconds)
    started = payload.get("started_ns")
    if "error" in payload:
        err = payload["error"]
        return ChildResult(target, "error", message=err.get("message", ""), error_type=err.get("type"),
                           hint=err.get("hint"), exit_code=proc.returncode, stderr_tail=last_stderr_line(proc.stderr),
                           spawn_ns=spawn, started_ns=started, seconds=seconds)
    return ChildResult(target, "ok", value=payload.get("value"), exit_code=proc.returncode, spawn_ns=spawn,
                       started_ns=started, seconds=seconds)


def _result_line(stdout: str) -> dict | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            try:
                return json.loads(line[len(RESULT_MARKER):])
            except json.JSONDecodeError:
                return None
    return None


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def last_stderr_line(text: str | None) -> str:
    """The line that says why a process died: a C++ terminate's `what():` text, else the
    last line naming an error, else the last non-empty line."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "what():" in ln:
            return ln.split("what():", 1)[1].strip()[:400]
    line = next((ln for ln in reversed(lines) if "Error" in ln), lines[-1] if lines else "")
    return line[:400]


def child_main(started_ns: int) -> None:
    """Entry point of STUB in the child: call the target, print the result line."""
    import importlib

    target, request = sys.argv[1], json.loads(sys.argv[2])
    module_name, _, function_name = target.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
        line = json.dumps({"value": function(request), "started_ns": started_ns})
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the parent as data
        error = {"type": type(exc).__name__, "message": getattr(exc, "message", None) or str(exc) or type(exc).__name__,
                 "hint": getattr(exc, "hint", None)}
        line = json.dumps({"error": error, "started_ns": started_ns}, default=str)
    sys.stdout.write("\n" + RESULT_MARKER + line + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    # ORT and torch tear down slowly (and some providers crash at exit): the result is out
    os._exit(0)
