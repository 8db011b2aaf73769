"""Atomic output: write beside the target under a temporary name, rename into place
only when everything succeeded, so a failure never leaves a half-written file."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def unwritable_ancestor(path: str | Path) -> tuple[Path, str] | None:
    """Why `path` could not be written, checked before slow work and without creating
    anything: (the blocking path, "is a file" | "is not writable"), or None when it can be.
    Missing folders are fine (they are created on write)."""
    folder = Path(path).parent.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return folder, "is a file"
    if not os.access(folder, os.W_OK | os.X_OK):
        return folder, "is not writable"
    return None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@contextmanager
def staging_dir(target_dir: str | Path) -> Iterator[Path]:
    """A temporary folder on the same filesystem as `target_dir` (so renames are atomic),
    removed afterwards whatever happened."""
    target_dir = Path(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".onnxtax-", dir=target_dir))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish(staged: list[tuple[Path, Path]]) -> None:
    """Move staged files into place. Each rename is atomic; the files the model
    references (external data) go first and the manifest last, so a reader never
    sees a manifest whose files are not there yet."""
    for src, dst in staged:
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a report should be readable like any file
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | Path, data: object) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
