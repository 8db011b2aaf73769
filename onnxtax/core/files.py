"""Atomic output: write beside the target under a temporary name, rename into place
only when everything succeeded, so a failure never leaves a half-written file."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from onnxtax.core.errors import OnnxtaxError

WRITABLE_HINT = "give a path in a folder you can write to"


def unwritable_ancestor(path: str | Path) -> tuple[Path, str] | None:
    """Why `path` could not be written, checked before slow work and without leaving
    anything behind: (the blocking path, "is a file" | "is not writable: why"), or None
    when it can be. Missing folders are fine (they are created on write). The folder is
    probed with a real file: permission bits say nothing to root, nor about read-only
    mounts and immutable folders."""
    folder = Path(path).parent.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return folder, "is a file"
    try:  # the system's own reason: Permission denied, Read-only file system, Operation not permitted
        fd, probe = tempfile.mkstemp(prefix=".onnxtax-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return folder, f"is not writable: {exc.strerror or exc}"
    return None


def check_output(path: str | Path, what: str, *, folder: bool = False, append: bool = False) -> Path:
    """Before the work starts: refuse an output path that cannot be written (exit 2,
    naming `what`, e.g. "--json", and the path). `folder`: the path is a folder to write
    files into; `append`: an existing file is appended to ($GITHUB_STEP_SUMMARY)."""
    path = Path(path)
    problem = None
    if folder and path.exists() and not path.is_dir():
        problem = "it is a file"
    elif not folder and path.is_dir():
        problem = "it is a directory"
    elif path.exists() and not path.is_dir() and not path.is_file():
        pass  # /dev/stdout, a FIFO: written in place, nothing to probe
    elif append and path.is_file():
        try:
            with open(path, "a", encoding="utf-8"):
                pass
        except OSError as exc:
            problem = exc.strerror or str(exc)
    else:
        blocked = unwritable_ancestor(path / "x" if folder else path)
        if blocked is not None:
            where, why = blocked
            problem = f"{where} is not a directory" if why == "is a file" else f"{where} {why}"
    if problem:
        raise OnnxtaxError(f"cannot write {what} {path}: {problem}", WRITABLE_HINT)
    return path


@contextmanager
def writing(path: str | Path, what: str) -> Iterator[None]:
    """An OS error while writing an output becomes one line naming the output (exit 2)."""
    try:
        yield
    except OSError as exc:
        why = exc.strerror or str(exc)
        other = Path(exc.filename) if exc.filename else None
        if isinstance(exc, FileExistsError) and other is not None and other != Path(path):
            why = f"{other} is not a directory"  # creating the folders met a file
        elif other is not None and other != Path(path) and not other.name.startswith(f".{Path(path).name}."):
            why += f": {other}"  # a folder on the way, not our temporary file
        raise OnnxtaxError(f"cannot write {what} {path}: {why}", WRITABLE_HINT) from exc


def write_output(path: str | Path, content: str | bytes | object, what: str, *, append: bool = False) -> Path:
    """The one way a command writes a file a user asked for: text, bytes or JSON-ready
    data, atomically (or appended, for $GITHUB_STEP_SUMMARY); OS errors as one line."""
    path = Path(path)
    with writing(path, what):
        if append:
            with open(path, "a", encoding="utf-8") as f:
                f.write(str(content))
        elif isinstance(content, bytes):
            write_bytes_atomic(path, content)
        elif isinstance(content, str):
            write_text_atomic(path, content)
        else:
            write_json_atomic(path, content)
    return path


# What file_kind calls the files a data flag reads (np.load reports on those itself).
NPZ_KIND = "an .npz archive of arrays"
NPY_KIND = "a .npy array"
MANIFEST_KIND = "an onnxtax manifest"


def file_kind(path: str | Path) -> str | None:
    """What a file holds, in words ("a text file", "an ONNX model", NPZ_KIND), from its name and
    first bytes: for a message about a file given where another kind belongs (`--data m.onnx`,
    `verify eval.npz`). None when it cannot be read."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    suffix = path.suffix.lower()
    if not head:
        return "an empty file"
    if head.startswith(b"PK"):  # a zip: np.savez writes one, and so does torch.save
        return "a PyTorch checkpoint" if suffix in (".pt", ".pth", ".ckpt", ".bin") else NPZ_KIND
    if head.startswith(b"\x93NUMPY"):
        return NPY_KIND
    binary = "an ONNX model" if suffix == ".onnx" else "a binary file"
    if head[:1] == b"\x08" or b"\x00" in head:  # an ONNX protobuf starts with ir_version (field 1)
        return binary
    import codecs

    try:  # the first 512 bytes may end inside a character
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return binary
    if head.lstrip().startswith((b"{", b"[")):
        return MANIFEST_KIND if path.name.endswith(".manifest.json") else "a JSON file"
    return "a Python file" if suffix == ".py" else "a text file"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


STAGING_PREFIX = ".onnxtax-"
STAGING_OWNER = "owner.json"  # inside each staging folder: which process made it


@contextmanager
def staging_dir(target_dir: str | Path) -> Iterator[Path]:
    """A temporary folder on the same filesystem as `target_dir` (so renames are atomic),
    removed afterwards whatever happened. A process killed outright (SIGKILL, OOM) cannot
    clean up, so each folder records its owner and the next staging in the same folder
    removes those whose owner is gone. Folders made for `target_dir` that are still empty
    afterwards (nothing was published) are removed too."""
    target_dir = Path(target_dir)
    created = make_folders(target_dir)
    try:
        remove_stale_staging(target_dir)
        tmp = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=target_dir))
        try:
            (tmp / STAGING_OWNER).write_text(json.dumps(_this_process()), encoding="utf-8")
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        remove_empty(created)


def make_folders(folder: str | Path) -> list[Path]:
    """`mkdir -p folder`; returns the folders it made, innermost first (for remove_empty)."""
    folder = Path(folder).absolute()
    created = [d for d in (folder, *folder.parents) if not d.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return created


def remove_empty(folders: list[Path]) -> None:
    """Remove the folders, innermost first, while they are empty: a refused or failed command
    leaves no folder it made behind."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def remove_stale_staging(target_dir: str | Path) -> list[Path]:
    """Remove `.onnxtax-*` staging folders left by a process of this host that is gone
    (or whose pid now belongs to another process). Folders without an owner record, or
    from another host (a shared folder), are left alone."""
    removed = []
    for folder in Path(target_dir).glob(STAGING_PREFIX + "*"):
        try:
            owner = json.loads((folder / STAGING_OWNER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
            continue
        if not _process_alive(owner.get("pid"), owner.get("started")):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _this_process() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": _process_start(os.getpid())}


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux /proc), which tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else None


def _process_alive(pid: object, started: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: alive
    except OSError:
        return True  # cannot tell: keep the folder
    now = _process_start(pid)
    if started is not None and Path("/proc/self/stat").exists():
        return now == started  # None: a zombie or gone; another value: the pid was reused
    return True


def publish(staged: list[tuple[Path, Path]]) -> None:
    """Move staged files into place. Each rename is atomic; the files the model
    references (external data) go first and the manifest last, so a reader never
    sees a manifest whose files are not there yet."""
    for src, dst in staged:
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    path = Path(path)
    if path.exists() and not path.is_file():
        # /dev/stdout, a FIFO: written in place; renaming over them would replace the device node
        with open(path, "wb") as f:
            f.write(data)
        return
    if path.is_symlink():
        path = path.resolve()  # replace the file the link points to, not the link
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
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
