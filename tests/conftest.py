"""Shared fixtures. Tiny models are built inside the tests; this file only holds helpers
every test module needs: writing a model file to disk and running the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


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


@pytest.fixture
def cli():
    return run_cli


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
