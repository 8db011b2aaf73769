"""Serving hosts as processes: started on the server's cores, connected to the generator's
socket, measured from /proc (CPU time, RSS, PSS), stopped.

Cores: the generator runs in this process on the generator's cores; every host process is
started with the server's cores as its affinity (set on the spawning thread around the spawn,
so the child and every thread it ever makes inherit it: imports, model load and serving all
run there). On a machine with one usable core both share it (said in the report).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from onnxtax.core.errors import CheckFailed
from onnxtax.serve.wire import ERROR, HEADER, HELLO

START_TIMEOUT_S = 600  # model load (and check) of one host process
HOST_JS = Path(__file__).with_name("node_host.js")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class HostFailed(CheckFailed):
    """A host process that died, refused the model or failed a batch: the path fails (exit 1)."""


@dataclass
class Launch:
    """How to start one host process of a path."""

    path: str  # the path id: eager | ort | node | noop:python | noop:node
    language: str  # python | node
    config: dict  # the host's JSON config (socket filled in per start)
    node: str | None = None  # node executable
    node_path: str | None = None  # NODE_PATH (the cached node_modules)
    env: dict = field(default_factory=dict)  # extra environment (a package spec's PYTHONPATH)


def usable_cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: no affinity; every core counts as shared
        return list(range(os.cpu_count() or 1))


def split_cores(server_cores: int | None) -> tuple[list[int], list[int], bool]:
    """(server cores, generator cores, shared): the generator takes the first usable core, the
    server `server_cores` of the others (default all of them); one core: both share it."""
    cores = usable_cores()
    if len(cores) < 2:
        return cores, cores, True
    generator = cores[:1]
    rest = cores[1:]
    count = len(rest) if server_cores is None else min(server_cores, len(rest))
    return rest[:count], generator, False


@contextmanager
def pinned(cores: list[int]) -> Iterator[None]:
    """This thread on `cores` for the block (a child spawned inside inherits them)."""
    if not hasattr(os, "sched_setaffinity") or not cores:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# --------------------------------------------------------------------------- /proc
def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (every thread), from /proc/PID/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def cores_busy(cores: list[int]) -> float | None:
    """CPU seconds the given cores spent on anything (every process) since boot, from /proc/stat:
    with the host's own CPU time, what else ran on the host's cores."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    wanted = {f"cpu{c}" for c in cores}
    total = 0
    for line in lines:
        parts = line.split()
        if parts and parts[0] in wanted:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in parts[1:9])
            total += user + nice + system + irq + softirq + steal
    return total / _TICK


def memory_of(pid: int) -> dict[str, int | None]:
    """rss, peak rss (VmHWM) and pss in bytes (None where /proc does not say)."""
    out: dict[str, int | None] = {"rss": None, "peak": None, "pss": None}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss"] = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                out["peak"] = int(line.split()[1]) * 1024
    except OSError:
        return out
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["pss"] = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    return out


# --------------------------------------------------------------------------- a running group
class HostGroup:
    """The processes serving one path under one policy (one, or `workers` of them), each
    connected to the generator by its own socket."""

    def __init__(self, launch: Launch, processes: int, server_cores: list[int], work: Path):
        self.launch = launch
        self.count = processes
        self.server_cores = server_cores
        self.work = work
        self.procs: list[subprocess.Popen] = []
        self.conns: list[socket.socket] = []
        self.hellos: list[dict] = []
        self.stderr_files: list[Path] = []
        self.spawn_ns = 0
        self.ready_ns = 0
        self.listener: socket.socket | None = None

    # ----- start
    def start(self, *, check: dict | None = None, warmup: bool = True, timeout: float = START_TIMEOUT_S
              ) -> "HostGroup":
        sock_path = Path(tempfile.mkdtemp(prefix="onnxtax-sock-")) / "s"
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(sock_path))
        self.listener.listen(self.count)
        self.listener.settimeout(0.05)
        self.sock_path = sock_path
        self.spawn_ns = time.monotonic_ns()
        for k in range(self.count):
            cfg = dict(self.launch.config, socket=str(sock_path), warmup=warmup,
                       check=check if k == 0 else None, worker=k)
            cfg_path = self.work / f"host-{self.launch.path.replace(':', '-')}-{os.getpid()}-{time.monotonic_ns()}.json"
            cfg_path.write_text(json.dumps(cfg), encoding="utf-8")
            err_path = cfg_path.with_suffix(".stderr")
            self.stderr_files.append(err_path)
            with open(err_path, "wb") as err, pinned(self.server_cores):
                self.procs.append(subprocess.Popen(self._command(cfg_path), stdin=subprocess.DEVNULL,
                                                   stdout=subprocess.DEVNULL, stderr=err, env=self._env()))
        deadline = time.monotonic() + timeout
        while len(self.conns) < self.count:
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                dead = [p for p in self.procs if p.poll() is not None]
                if dead:
                    raise self.failure(f"exited with code {dead[0].returncode} before serving")
                if time.monotonic() > deadline:
                    raise self.failure(f"not ready after {timeout:g} s")
                continue
            conn.settimeout(timeout)
            try:
                self.hellos.append(self._hello(conn))
            except (ConnectionError, socket.timeout) as exc:
                conn.close()
                raise self.failure(f"closed the connection before serving ({exc})") from None
            conn.setblocking(False)
            self.conns.append(conn)
        self.ready_ns = time.monotonic_ns()
        return self

    def _command(self, cfg_path: Path) -> list[str]:
        if self.launch.language == "node":
            return [self.launch.node or "node", str(HOST_JS), str(cfg_path)]
        return [sys.executable, "-m", "onnxtax.serve.pyhost", str(cfg_path)]

    def _env(self) -> dict:
        env = dict(os.environ, **self.launch.env)
        if self.launch.language == "node":
            env["NODE_PATH"] = str(self.launch.node_path or "")
        else:
            package_root = str(Path(__file__).resolve().parents[2])
            env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        return env

    def _hello(self, conn: socket.socket) -> dict:
        head = _recv_exact(conn, HEADER.size)
        body_len, kind = HEADER.unpack(head)
        body = _recv_exact(conn, body_len)
        if kind == ERROR:
            raise self.failure(body.decode(errors="replace"))
        if kind != HELLO:
            raise self.failure("did not introduce itself (a host of another onnxtax version?)")
        return json.loads(body)

    # ----- measure
    @property
    def pids(self) -> list[int]:
        return [int(h.get("pid") or p.pid) for h, p in zip(self.hellos, self.procs)]

    def busy_seconds(self) -> float | None:
        """CPU seconds of everything that ran on the host's cores (cores_busy)."""
        return cores_busy(self.server_cores)

    def cpu_seconds(self) -> float | None:
        values = [cpu_seconds(pid) for pid in self.pids]
        return None if any(v is None for v in values) else float(sum(values))  # type: ignore[arg-type]

    def memory(self) -> dict[str, int | None]:
        rows = [memory_of(pid) for pid in self.pids]
        return {k: (sum(r[k] for r in rows) if all(r[k] is not None for r in rows) else None)  # type: ignore[misc]
                for k in ("rss", "peak", "pss")}

    def versions(self) -> dict:
        return dict(self.hellos[0].get("versions") or {}) if self.hellos else {}

    # ----- failure and stop
    def stderr_tail(self) -> str:
        from onnxtax.core.child import last_stderr_line

        for path in self.stderr_files:
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            line = last_stderr_line(text)
            if line:
                return line
        return ""

    def failure(self, what: str) -> HostFailed:
        tail = self.stderr_tail()
        self.close()
        return HostFailed(f"{self.launch.path}: the {self.launch.language} host {what}" + (f": {tail}" if tail and
                          tail not in what else ""), "run the same model with `onnxtax parity`, or with --debug")

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.close()
            except OSError:
                pass
        self.conns = []
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            try:
                self.sock_path.unlink()
                self.sock_path.parent.rmdir()
            except OSError:
                pass
        for path in self.stderr_files:
            path.unlink(missing_ok=True)


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = conn.recv(n - len(out))
        if not chunk:
            raise ConnectionError("the host closed the connection")
        out += chunk
    return bytes(out)
