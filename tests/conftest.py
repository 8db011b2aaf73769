"""Shared fixtures. Tiny models are built inside the tests; this file only holds helpers
every test module needs: writing a model file to disk and running the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

# pytest-xdist runs one worker per core: each worker and the processes its tests start get one
# OpenMP thread, else torch's pools put two spinning threads per worker on each core (the suite
# took 183 s on 2 cores, 171 s with one thread each). Set before any test module imports torch.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


# The files that take longest (seconds of test time on 2 cores, `--durations=0`), run first: with
# one file per worker at a time (`--dist loadfile`), a long file started last is the suite's tail.
LONGEST_FIRST = ["test_hf_specs.py", "test_weights.py", "test_localize_ops.py", "test_export.py", "test_serve.py",
                 "test_bench_cli.py", "test_runtimes.py", "test_signals.py", "test_bench.py", "test_export_cli.py"]


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))  # stable: file order kept


@pytest.fixture(scope="session", autouse=True)
def _one_torchlib_registry():
    """The tests' own torch.onnx.export(dynamo=True) calls get the table onnxtax export keeps
    (onnxtax.export.registry): one build per worker instead of one per call."""
    from onnxtax.export.registry import keep_torchlib_registry

    keep_torchlib_registry()


@pytest.fixture
def write_model(tmp_path):
    """Write Python source to tmp_path/NAME.py and return the path (for SPEC strings)."""

    def _write(source: str, name: str = "user_model") -> Path:
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        return path

    return _write


def run_cli(*args: str, cwd: str | Path | None = None, env: dict | None = None,
            python: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `python -m onnxtax ARGS` as a user would, in a subprocess."""
    full_env = dict(os.environ)
    full_env.setdefault("COLUMNS", "200")
    full_env.pop("GITHUB_STEP_SUMMARY", None)
    if env:
        full_env.update(env)
    return subprocess.run([python or sys.executable, "-m", "onnxtax", *map(str, args)], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


@dataclass
class Ran:
    """What a command did, as a subprocess result reads: exit code, stdout, stderr."""

    returncode: int
    stdout: str
    stderr: str


def run_in_process(*args: str, cwd: str | Path | None = None, env: dict | None = None) -> Ran:
    """`onnxtax ARGS` run by the Typer app in this process, as a user's shell would run it: the
    same flags, exit code and streams, without paying for a new interpreter and torch's import
    (~2 s) per call. A bug's traceback ends up in stderr with exit code 1, as in a process."""
    import traceback

    from typer.testing import CliRunner

    from onnxtax.cli import app

    full_env = {"COLUMNS": "200", "GITHUB_STEP_SUMMARY": None, **(env or {})}
    previous = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, [str(a) for a in args], env=full_env, catch_exceptions=True)
    finally:
        os.chdir(previous)
    stderr = result.stderr
    code = result.exit_code
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
        code = 1
    return Ran(code, result.stdout, stderr)


@pytest.fixture
def cli():
    """`onnxtax ...` in this process; with `python=` (the OpenVINO virtualenv's), a subprocess."""

    def run(*args, cwd=None, env=None, python=None, timeout=300):
        if python is not None:
            return run_cli(*args, cwd=cwd, env=env, python=python, timeout=timeout)
        return run_in_process(*args, cwd=cwd, env=env)

    return run


def openvino_python() -> str | None:
    """The second virtualenv's interpreter (onnxruntime-openvino), set by `make test`."""
    path = os.environ.get("ONNXTAX_OPENVINO_PYTHON")
    return path if path and Path(path).exists() else None


@pytest.fixture
def ov_python():
    path = openvino_python()
    if path is None:
        if os.environ.get("CI") or os.environ.get("ONNXTAX_REQUIRE_OPENVINO"):
            pytest.fail("ONNXTAX_OPENVINO_PYTHON is not set: run the suite with `make test`")
        pytest.skip("the OpenVINO virtualenv is set up by `make test`")
    return path
