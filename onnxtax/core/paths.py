"""What one command reads and writes, known before the work starts.

A report path that is also an input (`parity M.py:MLP m.onnx --json m.onnx`, `quantize ... --json
data/eval.npz`, `--junit m.manifest.json`) would destroy the user's file after the work succeeded.
Every command lists its inputs and outputs here; `check()` compares each output with each input
through symlinks, `./` and hard links, and refuses a clash (exit 2, naming both) before any work.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from onnxtax.core.errors import OnnxtaxError
from onnxtax.core.files import check_output
from onnxtax.core.manifest import manifest_path_for, provenance_path_for, signature_path_for


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file: through symlinks, `./` and `..`, and hard links (the same
    device and inode) when both exist."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


class PlannedFiles:
    """Every file one command will read and write, known before the work starts. `check()`
    refuses an output that cannot be written and an output that is one of the inputs (a report
    written over the model, its manifest or the user's data): exit 2, naming both, nothing touched."""

    def __init__(self) -> None:
        self.reads: list[tuple[Path, str]] = []
        self.writes: list[tuple[Path, str, bool, bool, bool]] = []  # (path, flag, folder, append, probe)

    def read(self, path: str | Path | None, what: str) -> "PlannedFiles":
        if path is not None and str(path) != "-":
            self.reads.append((Path(path), what))
        return self

    def read_artifact(self, onnx_path: str | Path | None, what: str = "the model", *,
                      signing: bool = True) -> "PlannedFiles":
        """The .onnx, its manifest and its weight files (`m.onnx.data`, and every data file the
        manifest lists); with `signing`, its signature and provenance too (not for `sign`, which
        writes them)."""
        if onnx_path is None:
            return self
        path = Path(onnx_path)
        self.read(path, what)
        manifest = manifest_path_for(path)
        self.read(manifest, f"the manifest of {path.name}")
        self.read(path.with_name(path.name + ".data"), f"the weights of {path.name}")
        if signing:
            self.read(signature_path_for(path), f"the signature of {path.name}")
            self.read(provenance_path_for(path), f"the provenance of {path.name}")
        try:
            listed = json.loads(manifest.read_text(encoding="utf-8"))["artifact"].get("external_data") or []
            for entry in listed:
                self.read(path.parent / entry["file"], f"the weights of {path.name}")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # no manifest, or one the stage itself reports as unreadable
        return self

    def read_spec(self, spec: str | None) -> "PlannedFiles":
        """The model's source file, when the spec names a file (`path/to/m.py:NAME`); the files of an
        hf:DIR / st:DIR folder."""
        if spec and spec[:3] in ("hf:", "st:"):
            folder = Path(spec[3:].split("?")[0].split("#")[0]).expanduser()
            if folder.is_dir():
                for f in sorted(folder.iterdir()):
                    self.read(f, f"a file of the model folder {folder}")
            return self
        if spec and ":" in spec:
            target = spec.rpartition(":")[0]
            if target.endswith(".py") or "/" in target or "\\" in target:
                self.read(Path(target).expanduser(), "the model's source file")
        return self

    def write(self, path: str | Path | None, flag: str, *, folder: bool = False, append: bool = False,
              probe: bool = True) -> "PlannedFiles":
        """An output named by `flag` (`--json`); `probe`: check it can be written (a file the command
        writes beside another output needs no probe of its own)."""
        if path is not None and str(path) != "-":
            self.writes.append((Path(path), flag, folder, append, probe))
        return self

    def write_artifact(self, onnx_path: str | Path, flag: str = "-o", *, probe: bool = True) -> "PlannedFiles":
        """An artifact this command writes: the .onnx, its manifest and its `.data` file."""
        path = Path(onnx_path)
        self.write(path, flag, probe=probe)
        self.write(manifest_path_for(path), f"{flag} (its manifest)", probe=False)
        self.write(path.with_name(path.name + ".data"), f"{flag} (its weights)", probe=False)
        self.write(signature_path_for(path), f"{flag} (its signature)", probe=False)
        self.write(provenance_path_for(path), f"{flag} (its provenance)", probe=False)
        return self

    def check(self) -> None:
        for n, (path, flag, folder, _, _) in enumerate(self.writes):
            if folder:
                continue  # a folder of outputs: the files in it are named by the command
            for source, what in self.reads:
                if same_file(path, source):
                    raise OnnxtaxError(f"{flag} {path} is {what} ({source}): writing it would destroy it",
                                       f"give {flag.split()[0]} another path" if flag.startswith(("-", "$"))
                                       else "give it another path")
            for other, other_flag, other_folder, _, _ in self.writes[:n]:
                if not other_folder and same_file(path, other):
                    raise OnnxtaxError(f"{flag} {path} and {other_flag} {other} are the same file",
                                       "give each output its own path")
        for path, flag, folder, append, probe in self.writes:
            if probe:
                check_output(path, flag, folder=folder, append=append)


def tool_cache_dir(kind: str, env_var: str, flag: str | Path | None = None, config: str | Path | None = None) -> Path:
    """Where onnxtax keeps what it builds once (runtime virtualenvs, the Node.js host's packages):
    the flag, then $ENV_VAR, then the config key, then $XDG_CACHE_HOME/onnxtax/KIND."""
    for value in (flag, os.environ.get(env_var), config):
        if value:
            return Path(value).expanduser().absolute()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "onnxtax" / kind


class BuildLock:
    """An exclusive lock on one thing built into a cache (a runtime's virtualenv, the Node.js host's
    packages): the second process waits, then finds it ready. The holder removes the lock file when
    it is done, built or not (a failed build leaves nothing in the cache), so a process that waited
    on a file since removed takes the lock again on the file now at that path. `label` names what
    is built in the waiting message."""

    def __init__(self, path: Path, label: str, say: Callable[..., None]):
        self.path, self.label, self.say = path, label, say

    def __enter__(self) -> "BuildLock":
        while True:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                import fcntl
            except ImportError:  # Windows: no advisory locks; the rename into place still keeps builds whole
                return self
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.say(f"{self.label}: waiting for another process that is building it")
                fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                if os.path.samestat(os.fstat(self.fd), os.stat(self.path)):
                    return self
            except FileNotFoundError:
                pass  # removed by the process we waited for: lock the path's new file
            os.close(self.fd)

    def __exit__(self, *exc: object) -> None:
        try:
            os.unlink(self.path)  # while still held: a waiter then sees it gone and starts over
        except OSError:
            pass
        os.close(self.fd)  # closing releases the lock
