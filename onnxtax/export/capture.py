"""What torch.onnx prints and logs, captured (dozens of lines a run) unless debugging."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings


class Quiet:
    """Capture what torch.onnx prints and logs (dozens of lines a run) unless debugging."""

    LOGGERS = ("torch", "onnxscript", "onnx_ir", "torch.onnx", "torch.fx", "torch._export", "torch.export")

    def __init__(self, debug: bool):
        self.debug = debug
        self.buffer = io.StringIO()
        self._stack = contextlib.ExitStack()
        self._levels: dict[str, int] = {}

    def __enter__(self):
        if self.debug:
            return self
        self._stack.enter_context(capture_fds(self.buffer))
        self._stack.enter_context(contextlib.redirect_stdout(self.buffer))
        self._stack.enter_context(contextlib.redirect_stderr(self.buffer))
        self._stack.enter_context(warnings.catch_warnings(record=True))
        warnings.simplefilter("always")
        for name in self.LOGGERS:
            lg = logging.getLogger(name)
            self._levels[name] = lg.level
            lg.setLevel(logging.CRITICAL)
        return self

    def __exit__(self, *exc):
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
        self._stack.close()
        return False


@contextlib.contextmanager
def capture_fds(buffer: io.StringIO):
    """The TorchScript exporter and ORT print from C++ straight to fds 1 and 2."""
    import os
    import sys
    import tempfile

    fds = [1, 2]  # the process's own descriptors, whatever sys.stdout currently wraps
    with tempfile.TemporaryFile(mode="w+b") as sink:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        saved = [os.dup(fd) for fd in fds]
        try:
            for fd in fds:
                os.dup2(sink.fileno(), fd)
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except ValueError:
                    pass
            for fd, old in zip(fds, saved):
                os.dup2(old, fd)
                os.close(old)
            sink.seek(0)
            buffer.write(sink.read().decode("utf-8", errors="replace"))
