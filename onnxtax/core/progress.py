"""The one progress contract between a stage and whoever shows it.

Every stage (export, lint, parity, bench, ci) takes `progress: Progress | None` and calls
`progress(message)` for a step or `progress(message, done, total)` when it can count. The
library never prints; the CLI has one renderer (cli/_app.py `progress_display`).
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def __call__(self, message: str, done: int | None = None, total: int | None = None) -> None: ...


def silent(message: str, done: int | None = None, total: int | None = None) -> None:
    """A Progress that shows nothing (the default of every stage)."""
