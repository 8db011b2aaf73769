"""The Node.js host's runtime: `onnxruntime-node` installed from npm into a cache, one folder per
release, built once and reused offline (as the runtime matrix's virtualenvs are).

Where: `--node-dir`, else $ONNXTAX_NODE_DIR, else `[serve] node_dir`, else
$XDG_CACHE_HOME/onnxtax/node (~/.cache/onnxtax/node). One folder per release:
`onnxruntime-node-1.30.0/node_modules/...`.

The install: `npm install --ignore-scripts onnxruntime-node@V` with ONNXRUNTIME_NODE_INSTALL=skip
(the package's install script would fetch GPU binaries; the CPU binaries ship inside the package),
in a temporary folder beside the cache, then a check that Node.js loads it and reports the same
version; the `onnxtax-node.json` marker is written and the folder renamed into place only then, so
an interrupted install never looks ready. An exclusive lock per release makes a second process
wait for the first instead of installing twice.

`python -m onnxtax.serve.node_env [VERSION]` installs into the default cache (make test's setup).
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
from typing import Callable

from onnxtax.core.errors import OnnxtaxError
from onnxtax.core.paths import BuildLock, tool_cache_dir
from onnxtax.core.progress import silent

CACHE_ENV = "ONNXTAX_NODE_DIR"
NODE_ENV = "ONNXTAX_NODE"  # the node executable, when not `node` on PATH
DEFAULT_VERSION = "1.30.0"
MARKER = "onnxtax-node.json"
PACKAGE = "onnxruntime-node"
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
INSTALL_TIMEOUT_S = 900

Say = Callable[..., None]


class NodeEnvError(OnnxtaxError):
    """Node.js or the onnxruntime-node package cannot be found or installed."""


@dataclass
class NodeEnv:
    """A ready install: `node_path` goes in NODE_PATH for the host."""

    version: str
    path: Path
    node: str
    node_version: str
    built_now: bool = False
    build_s: float | None = None

    @property
    def node_path(self) -> Path:
        return self.path / "node_modules"

    def to_dict(self) -> dict:
        return {"onnxruntime_node": self.version, "path": str(self.path), "node": self.node,
                "node_version": self.node_version, "built_now": self.built_now, "build_s": self.build_s}


def resolve_cache_dir(flag: str | Path | None = None, config: str | Path | None = None) -> Path:
    """Flag, then $ONNXTAX_NODE_DIR, then the config key, then the default (onnxtax.core.paths.cache_dir)."""
    return tool_cache_dir("node", CACHE_ENV, flag, config)


def check_version(version: str) -> str:
    version = str(version).strip()
    if not _VERSION.match(version):
        raise NodeEnvError(f"onnxruntime-node version '{version}' is not an exact release",
                           f"give MAJOR.MINOR.PATCH, e.g. --node-ort {DEFAULT_VERSION}")
    return version


def find_node(node: str | None = None) -> tuple[str, str]:
    """(path of the node executable, its version without the v), or NodeEnvError."""
    wanted = node or os.environ.get(NODE_ENV) or "node"
    path = shutil.which(wanted)
    if path is None:
        raise NodeEnvError(f"Node.js is not installed here ('{wanted}' is not on PATH)",
                           "install Node.js 18 or later, give --node PATH, or leave the node path out "
                           "(--paths eager,ort)")
    try:
        proc = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise NodeEnvError(f"cannot run {path} --version: {exc}", "check the Node.js install") from exc
    text = proc.stdout.strip().lstrip("v")
    major = int(text.split(".")[0]) if text.split(".")[0].isdigit() else 0
    if proc.returncode != 0 or major < 18:
        raise NodeEnvError(f"{path} is Node.js '{text or proc.stderr.strip()[:80]}'; onnxruntime-node needs 18 or "
                           "later", "install a current Node.js LTS, or give --node PATH")
    return path, text


def env_dir(cache_dir: Path, version: str) -> Path:
    return cache_dir / f"{PACKAGE}-{version}"


def find_env(cache_dir: Path, version: str, node: str | None = None) -> NodeEnv | None:
    """The ready install of `version`, or None (missing, or an install that never finished)."""
    folder = env_dir(cache_dir, version)
    marker = folder / MARKER
    if not marker.is_file() or not (folder / "node_modules" / PACKAGE / "package.json").is_file():
        return None
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if info.get(PACKAGE) != version:
        return None
    path, node_version = find_node(node)
    return NodeEnv(version, folder, path, node_version)


def ensure_node_env(version: str = DEFAULT_VERSION, cache_dir: Path | None = None, *, offline: bool = False,
                    node: str | None = None, say: Say | None = None) -> NodeEnv:
    """The install of onnxruntime-node `version`, made now if it is not in the cache (unless offline)."""
    version = check_version(version)
    cache_dir = cache_dir or resolve_cache_dir()
    say = say or silent
    find_node(node)  # no Node.js: nothing to install for
    found = find_env(cache_dir, version, node)
    if found is not None:
        return found
    if offline:
        raise NodeEnvError(f"{PACKAGE} {version} is not in the Node.js cache ({cache_dir}) and --offline forbids "
                           "installing it", f"run once without --offline to install it, or point --node-dir / "
                           f"${CACHE_ENV} at a cache that has {PACKAGE}-{version}")
    if shutil.which("npm") is None:
        raise NodeEnvError(f"npm is not installed, so {PACKAGE} {version} cannot be installed",
                           "install npm (it comes with Node.js), or copy a cache made elsewhere to "
                           f"${CACHE_ENV}")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NodeEnvError(f"cannot create the Node.js cache {cache_dir}: {exc.strerror or exc}",
                           f"set --node-dir or ${CACHE_ENV} to a writable folder") from exc
    with BuildLock(cache_dir / f".{PACKAGE}-{version}.lock", f"{PACKAGE} {version}", say):
        found = find_env(cache_dir, version, node)  # another process may have installed it meanwhile
        if found is not None:
            return found
        return _install(version, cache_dir, node, say)


def _install(version: str, cache_dir: Path, node: str | None, say: Say) -> NodeEnv:
    t0 = time.perf_counter()
    final = env_dir(cache_dir, version)
    for stale in cache_dir.glob(f".build-{PACKAGE}-{version}-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed install (we hold the lock)
    if final.exists():
        shutil.rmtree(final, ignore_errors=True)  # a folder without marker: not ours to trust
    tmp = cache_dir / f".build-{PACKAGE}-{version}-{os.getpid()}"
    node_exe, node_version = find_node(node)
    try:
        tmp.mkdir(parents=True)
        (tmp / "package.json").write_text(json.dumps({"name": "onnxtax-node-host", "version": "0.0.0",
                                                      "private": True}) + "\n", encoding="utf-8")
        say(f"{PACKAGE} {version}: npm install")
        env = dict(os.environ, ONNXRUNTIME_NODE_INSTALL="skip", npm_config_update_notifier="false")
        try:
            proc = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts",
                                   "--no-package-lock", f"{PACKAGE}@{version}"], cwd=tmp, env=env,
                                  capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise NodeEnvError(f"npm install {PACKAGE}@{version} did not finish in {INSTALL_TIMEOUT_S} s",
                               "check that the npm registry is reachable") from exc
        if proc.returncode != 0:
            lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            why = next((ln for ln in lines if "ERR!" in ln and ("code" in ln or "404" in ln or "notarget" in ln)),
                       lines[-1] if lines else f"exit code {proc.returncode}")
            if any(w in proc.stderr for w in ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT")):
                why = "the npm registry is not reachable (no network?)"
            raise NodeEnvError(f"cannot install {PACKAGE} {version}: {why[:300]}",
                               "check the version exists on npm and the registry is reachable, or use --offline "
                               "with a cache that has it")
        say(f"{PACKAGE} {version}: checking that Node.js loads it")
        probe = subprocess.run([node_exe, "-e", "const o = require('onnxruntime-node'); "
                                "process.stdout.write(require('onnxruntime-node/package.json').version + ' ' + "
                                "typeof o.InferenceSession.create)"],
                               capture_output=True, text=True, timeout=120,
                               env=dict(os.environ, NODE_PATH=str(tmp / "node_modules")))
        got = probe.stdout.strip().split()
        if probe.returncode != 0 or got[-1:] != ["function"]:
            tail = (probe.stderr.strip().splitlines() or ["no output"])[-1][:300]
            raise NodeEnvError(f"{PACKAGE} {version} installed but Node.js {node_version} does not load it: {tail}",
                               "use a Node.js release the package supports (18 or later)")
        if got[0] != version:
            raise NodeEnvError(f"asked for {PACKAGE} {version}, npm installed {got[0]}", "give an exact release")
        build_s = time.perf_counter() - t0
        (tmp / MARKER).write_text(json.dumps({PACKAGE: version, "node": node_version, "build_s": round(build_s, 2),
                                              "built_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                                             indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"{PACKAGE} {version}: ready in {build_s:.0f} s")
    return NodeEnv(version, final, node_exe, node_version, built_now=True, build_s=build_s)


def main(argv: list[str] | None = None) -> int:
    """Install (or find) the default release in the default cache; print where."""
    args = sys.argv[1:] if argv is None else argv
    try:
        env = ensure_node_env(args[0] if args else DEFAULT_VERSION,
                              say=lambda message, *_: print(message, file=sys.stderr))
    except OnnxtaxError as exc:
        print(f"error: {exc.message}\n  fix: {exc.hint}", file=sys.stderr)
        return 2
    print(f"{PACKAGE} {env.version} with Node.js {env.node_version}: {env.path}"
          + (f" (installed in {env.build_s:.0f} s)" if env.built_now else " (cached)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
