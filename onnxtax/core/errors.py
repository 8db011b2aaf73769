"""One root for user-facing errors, caught once in the CLI.

Exit codes are part of the contract: 0 passed, 1 a check failed, 2 usage, config
or input error. A bug in onnxtax is none of these and shows its traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_SIGINT = 130  # as a shell reports a process stopped by the signal (128 + number)
EXIT_SIGTERM = 143


class _Explained(Exception):
    """An exception that carries a one-line message and a fix."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class OnnxtaxError(_Explained):
    """A problem with what the user gave us; exits 2 with a one-line message and a fix."""


class InputSpecError(OnnxtaxError):
    """An --input, --dim, --range or --data value that cannot be parsed or does not fit."""


class LoadError(OnnxtaxError):
    """The model spec does not resolve to an nn.Module."""


class ConfigError(OnnxtaxError):
    """The config file is missing, malformed, or has unknown keys or wrong types."""


class ProviderError(OnnxtaxError):
    """A requested execution provider is unknown or not available on this host."""


class ManifestError(OnnxtaxError):
    """The manifest beside a model is missing or unreadable."""


class CheckFailed(_Explained):
    """A check of the artifact failed (a session that does not load, a size the graph cannot run).

    Not a user error: stages catch it and record it in their report (export's `error`, parity's
    provider status, bench's path status), which then exits 1. Where one escapes to the CLI or
    to `onnxtax ci` it still means "a check failed": exit 1 and stage status "failed", never 2."""

    exit_code = EXIT_CHECK_FAILED


class Terminated(KeyboardInterrupt):
    """SIGTERM (`timeout`, `docker stop`, Kubernetes) unwinds like Ctrl-C: staging folders
    are removed and `onnxtax ci` writes its interrupted report; exits 143."""

    signal_name = "SIGTERM"
    exit_code = EXIT_SIGTERM
