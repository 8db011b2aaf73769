"""Cached virtualenvs that hold one onnxruntime release each, for `onnxtax runtimes` and
`export --target-ort`.

A service pins its onnxruntime; the artifact must load in that release, not in the one
beside onnxtax. Each release gets its own virtualenv with only `onnxruntime==V` and a
numpy it supports (< 2 before 1.19), built on first use with `python -m venv` + pip and
reused afterwards.

Where: `--cache-dir`, else $ONNXTAX_RUNTIMES_DIR, else `[runtimes] cache_dir`, else
$XDG_CACHE_HOME/onnxtax/runtimes (~/.cache/onnxtax/runtimes). One folder per release and
Python: `ort-1.16.3-py311`.

Safety: a build runs in a temporary folder beside the cache and is renamed into place only
when pip succeeded and the runtime imports; the `onnxtax-env.json` marker inside is what
makes a folder "ready", so an interrupted build never looks like a usable one. An exclusive
lock file per release makes a second process wait for the first instead of building twice.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from onnxtax.core.errors import InputSpecError, OnnxtaxError
from onnxtax.core.paths import BuildLock, tool_cache_dir
from onnxtax.core.progress import silent

CACHE_ENV = "ONNXTAX_RUNTIMES_DIR"
MARKER = "onnxtax-env.json"
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")

Say = Callable[..., None]  # onnxtax.core.progress.Progress


class RuntimeEnvError(OnnxtaxError):
    """A runtime virtualenv cannot be found or built (offline, unknown release, pip failed)."""


def python_tag() -> str:
    return f"py{sys.version_info.major}{sys.version_info.minor}"


def resolve_cache_dir(flag: str | Path | None = None, config: str | Path | None = None) -> Path:
    """Flag, then $ONNXTAX_RUNTIMES_DIR, then the config key, then the default (onnxtax.core.paths.cache_dir)."""
    return tool_cache_dir("runtimes", CACHE_ENV, flag, config)


def check_version(version: str) -> str:
    """An exact release (1.16.3): a virtualenv pins one, a series would drift."""
    version = version.strip()
    if not _VERSION.match(version):
        raise RuntimeEnvError(f"onnxruntime version '{version}' is not an exact release",
                              "give MAJOR.MINOR.PATCH, e.g. --ort 1.16.3,1.18.1")
    return version


def requirements(version: str) -> list[str]:
    """onnxruntime before 1.19 is built against numpy 1.x and breaks on import with numpy 2."""
    major, minor, _ = (int(p) for p in version.split("."))
    return [f"onnxruntime=={version}"] + (["numpy<2"] if (major, minor) < (1, 19) else [])


@dataclass
class RuntimeEnv:
    """A ready virtualenv: its python runs the child script against this onnxruntime release."""

    version: str
    path: Path
    python: Path
    built_now: bool = False
    build_s: float | None = None
    numpy: str | None = None

    def to_dict(self) -> dict:
        return {"version": self.version, "path": str(self.path), "built_now": self.built_now,
                "build_s": self.build_s, "numpy": self.numpy}


def env_dir(cache_dir: Path, version: str) -> Path:
    return cache_dir / f"ort-{version}-{python_tag()}"


def _python_in(folder: Path) -> Path:
    return folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def find_env(cache_dir: Path, version: str) -> RuntimeEnv | None:
    """The ready virtualenv for `version`, or None (missing, or a build that never finished)."""
    folder = env_dir(cache_dir, version)
    marker = folder / MARKER
    if not marker.is_file() or not _python_in(folder).exists():
        return None
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if info.get("onnxruntime") != version:
        return None
    return RuntimeEnv(version, folder, _python_in(folder), numpy=info.get("numpy"))


def ensure_env(version: str, cache_dir: Path, *, offline: bool = False, say: Say | None = None) -> RuntimeEnv:
    """The virtualenv for `version`, built now if it is not in the cache (unless offline)."""
    version = check_version(version)
    say = say or silent
    found = find_env(cache_dir, version)
    if found is not None:
        return found
    if offline:
        raise RuntimeEnvError(f"onnxruntime {version} is not in the runtime cache ({cache_dir}) and --offline "
                              "forbids building it", f"run once without --offline to build it, or point "
                              f"--cache-dir / ${CACHE_ENV} at a cache that has ort-{version}-{python_tag()}")
    from onnxtax.core.files import make_folders, remove_empty

    try:
        created = make_folders(cache_dir)
    except OSError as exc:
        raise RuntimeEnvError(f"cannot create the runtime cache {cache_dir}: {exc.strerror or exc}",
                              f"set --cache-dir or ${CACHE_ENV} to a writable folder") from exc
    try:
        with BuildLock(cache_dir / f".ort-{version}-{python_tag()}.lock", f"onnxruntime {version}", say):
            found = find_env(cache_dir, version)  # another process may have built it while we waited
            if found is not None:
                return found
            return _build(version, cache_dir, say)
    except BaseException:
        remove_empty(created)  # no release built: the cache folders this call made go too
        raise


def _build(version: str, cache_dir: Path, say: Say) -> RuntimeEnv:
    t0 = time.perf_counter()
    final = env_dir(cache_dir, version)
    for stale in cache_dir.glob(f".build-ort-{version}-{python_tag()}-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed build (we hold the lock)
    if final.exists():
        shutil.rmtree(final, ignore_errors=True)  # a folder without marker: not ours to trust
    tmp = cache_dir / f".build-ort-{version}-{python_tag()}-{os.getpid()}"
    try:
        say(f"onnxruntime {version}: creating a virtualenv")
        _check_call([sys.executable, "-m", "venv", "--without-pip", str(tmp)], version, "python -m venv")
        reqs = requirements(version)
        say(f"onnxruntime {version}: pip install {' '.join(reqs)}")
        _pip_install(_python_in(tmp), reqs, version, say)
        say(f"onnxruntime {version}: checking that it imports")
        probe = subprocess.run([str(_python_in(tmp)), "-I", "-c",
                                "import json, numpy, onnxruntime as o; "
                                "print(json.dumps([o.__version__, numpy.__version__]))"],
                               capture_output=True, text=True, timeout=300)
        if probe.returncode != 0:
            raise RuntimeEnvError(f"onnxruntime {version} installed but does not import: "
                                  f"{_last_line(probe.stderr)}", "report the release; pick another patch version")
        ort_v, np_v = json.loads(probe.stdout.strip().splitlines()[-1])
        if ort_v != version:
            raise RuntimeEnvError(f"asked for onnxruntime {version}, pip installed {ort_v}",
                                  "give an exact released version")
        build_s = time.perf_counter() - t0
        (tmp / MARKER).write_text(json.dumps({"onnxruntime": ort_v, "numpy": np_v, "python": sys.version.split()[0],
                                              "requirements": reqs, "build_s": round(build_s, 2),
                                              "built_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                                             indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"onnxruntime {version}: ready in {build_s:.0f} s")
    return RuntimeEnv(version, final, _python_in(final), built_now=True, build_s=build_s, numpy=np_v)


def _check_call(cmd: list[str], version: str, what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeEnvError(f"onnxruntime {version}: {what} failed: {_last_line(proc.stderr or proc.stdout)}",
                              "check that this Python can create virtualenvs (the venv module)")


def _pip_install(python: Path, reqs: list[str], version: str, say: Say) -> None:
    """pip from this environment installs into the new one (`pip --python`, no ensurepip:
    seconds saved per build); its progress lines are passed on."""
    cmd = [sys.executable, "-m", "pip", "--python", str(python), "install", "--disable-pip-version-check",
           "--no-input", "--progress-bar", "off", *reqs]
    env = dict(os.environ, PIP_NO_INPUT="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if not line:
            continue
        lines.append(line)
        if line.startswith(("Collecting", "Downloading", "Installing", "Successfully", "Using cached")):
            say(f"onnxruntime {version}: {line.strip()[:120]}")
    if proc.wait() != 0:
        errors = [ln for ln in lines if ln.startswith("ERROR:")]
        why = errors[0][len("ERROR:"):].strip() if errors else _last_line("\n".join(lines))
        why = why.split(" (from versions:")[0]  # pip lists every release; the command line has them
        if any(w in "\n".join(lines) for w in ("NewConnectionError", "Temporary failure in name resolution",
                                               "Network is unreachable", "ConnectTimeout")):
            why = "the package index is not reachable (no network?)"
        raise RuntimeEnvError(f"cannot install onnxruntime {version}: {why[:300]}",
                              "check the version exists for this Python on the package index and that it is "
                              "reachable, or use --offline with a cache that has it")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


def cached_envs(cache_dir: Path) -> list[RuntimeEnv]:
    """The ready virtualenvs in the cache, for listing."""
    if not cache_dir.is_dir():
        return []
    out = []
    for folder in sorted(cache_dir.glob(f"ort-*-{python_tag()}")):
        version = folder.name[len("ort-"):-len(python_tag()) - 1]
        env = find_env(cache_dir, version)
        if env is not None:
            out.append(env)
    return out


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))

def parse_versions(texts: Sequence[str]) -> list[str]:
    """'1.16.3,1.18.1' (repeatable) -> sorted unique exact releases."""
    out = [check_version(v) for text in texts for v in text.split(",") if v.strip()]
    if not out:
        raise InputSpecError("no onnxruntime version given", "list releases, e.g. --ort 1.16.3,1.18.1,1.20.1")
    return sorted(set(out), key=version_key)
