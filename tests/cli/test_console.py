"""What a CI log gets: when stdout is not a terminal, COLUMNS is honoured and the default
layout is wide (rich alone lays out 80 columns and folds a large model's table); sizes in
the largest unit they fill."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from onnxtax.core.report import format_size

WIDTH = "from onnxtax.cli._app import get_console; print(get_console().width, get_console(stderr=True).width)"


def _widths(columns: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = columns
    proc = subprocess.run([sys.executable, "-c", WIDTH], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_piped_output_is_wide_unless_columns_says_otherwise():
    assert _widths(None) == "160 160"  # stdout and stderr are pipes here, as in a CI log
    assert _widths("100") == "100 100"
    assert _widths("0") == "160 160"


def test_a_long_line_stays_one_line_in_a_ci_log(tmp_path):
    """`onnxtax verify` with an unexpected data file: the explanation is ~130 characters."""
    from tests.cli.test_export_cli import _exported_linear

    out = _exported_linear(tmp_path)
    (out.parent / "m.onnx.data").write_bytes(b"\0")
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    proc = subprocess.run([sys.executable, "-m", "onnxtax", "verify", str(out)], env=env, capture_output=True,
                          text=True, timeout=60)
    extra = [line for line in proc.stdout.splitlines() if line.startswith("extra")]
    assert len(extra) == 1 and extra[0].endswith("remove it if it is stale)"), proc.stdout


@pytest.mark.parametrize("n_bytes, text", [(0, "0 B"), (812, "812 B"), (1935, "1.89 KiB"), (50074, "48.9 KiB"),
                                           (91_043_123, "86.8 MiB"), (2_877_000_000, "2.68 GiB")])
def test_sizes_in_the_largest_unit(n_bytes, text):
    assert format_size(n_bytes) == text
