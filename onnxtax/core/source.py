"""Where an artifact came from: the model's source file by digest, and the git commit it sits at.

Taken when the artifact is made (export writes it into the manifest as `source`), so that a
signature added later attests the source as it was then, not as it is when someone signs.

Record (keys stable):
{"file": "/abs/examples/fraud_detector.py", "sha256": "..." | null,
 "git": null | {"commit": "40 hex", "dirty": false, "path": "examples/fraud_detector.py",
                "tracked": true}}
`dirty`: a tracked file of the repository differs from the commit (untracked files do not count);
`tracked`: the source file itself is in the commit. git missing, or the file outside a
repository: "git" is null.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

GIT_TIMEOUT_S = 10


def source_record(source_file: str | Path | None) -> dict | None:
    """The file's digest and git state; None when the model came from no file (an object, a module
    in site-packages still has a file)."""
    if not source_file:
        return None
    from onnxtax.core.files import sha256_file

    path = Path(source_file).resolve()
    try:
        digest = sha256_file(path)
    except OSError:
        digest = None
    return {"file": str(path), "sha256": digest, "git": git_state(path)}


def _git(folder: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                             timeout=GIT_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state(path: Path) -> dict | None:
    """{"commit", "dirty", "path", "tracked"} of the repository holding `path`, or None."""
    folder = path.parent
    top = _git(folder, "rev-parse", "--show-toplevel")
    commit = _git(folder, "rev-parse", "--verify", "-q", "HEAD")
    if not top or not commit:
        return None  # not a repository, git missing, or a repository without a commit
    root = Path(top.strip()).resolve()
    try:
        relative = path.relative_to(root).as_posix()
    except ValueError:
        return None
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    tracked = _git(root, "ls-files", "--error-unmatch", "--", relative) is not None
    return {"commit": commit.strip(), "dirty": status is None or bool(status.strip()), "path": relative,
            "tracked": tracked}
