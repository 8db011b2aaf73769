"""`onnxtax parity` as a user runs it: exit codes, the table, --json, --junit, the step summary."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from typer.testing import CliRunner

from onnxtax.cli import app
from tests.test_parity import build_models
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_models(tmp_path_factory.mktemp("parity_cli_models"))


def invoke(*args, env: dict | None = None):
    return CliRunner().invoke(app, ["parity", *map(str, args)], catch_exceptions=False,
                              env={"COLUMNS": "200", "GITHUB_STEP_SUMMARY": None, **(env or {})})


def test_pass_writes_json_junit_and_step_summary(models, tmp_path):
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    res = invoke(f"{models['file']}:DictOut", models["DictOut"], "--json", tmp_path / "r.json",
                 "--junit", tmp_path / "r.xml", "--dim", "batch=2,9", "--samples", "2",
                 env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert res.exit_code == 0, res.output
    assert "parity passed" in res.stdout and "batch=9" in res.stdout and "double" in res.stdout
    assert re.search(r"cpu: (\d+)/\1 nodes on CPUExecutionProvider", res.stdout), res.stdout
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["passed"] is True and [s["label"] for s in data["shapes"]] == ["batch=2", "batch=9"]
    assert data["samples_per_shape"] == 2 and len(data["providers"][0]["cases"]) == 6
    root = ET.parse(tmp_path / "r.xml").getroot()
    assert (root.get("tests"), root.get("failures")) == ("6", "0")
    text = summary.read_text()
    assert text.startswith("# earlier step") and "onnxtax parity passed" in text and "| cpu | passed | 6/6 |" in text


def test_failure_exit_1_with_table_and_reasons(models, tmp_path):
    res = invoke(f"{models['file']}:MeanBranch", models["MeanBranch"], "--junit", tmp_path / "j.xml")
    assert res.exit_code == 1
    assert "FAIL values" in res.stdout and "parity FAILED" in res.stdout
    assert "depends on the input values" in res.stdout and "--localize finds" in res.stdout
    root = ET.parse(tmp_path / "j.xml").getroot()
    assert int(root.get("failures")) >= 1 and root.get("tests") == "3"


def test_json_on_stdout_is_only_json(models):
    res = invoke(f"{models['file']}:MLP", models["MLP"], "--json", "-")
    assert res.exit_code == 0
    data = json.loads(res.stdout)
    assert data["schema"] == "onnxtax.parity/2" and data["input_source"] == "onnx-graph"
    assert "parity passed" in res.stderr


def test_unavailable_provider_exit_2_or_skipped(models):
    res = invoke(f"{models['file']}:MLP", models["MLP"], "--provider", "cuda")
    assert res.exit_code == 2
    assert "not available on this host" in res.stderr and "available: CPUExecutionProvider" in res.stderr
    res = invoke(f"{models['file']}:MLP", models["MLP"], "--provider", "cuda", "--provider", "cpu",
                 "--skip-unavailable")
    assert res.exit_code == 0 and "skipped: not available on this host" in res.stdout


def test_range_for_int64_inputs(models):
    res = invoke(f"{models['file']}:Tokens", models["Tokens"], "--input", "ids:batch,seq:int64", "--range",
                 "ids=0:50", "--samples", "1", "--json", "-")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["inputs"][0]["range"] == [0, 50]
    res = invoke(f"{models['file']}:Tokens", models["Tokens"], "--range", "ids=0:500")
    assert res.exit_code == 2 and "IndexError" in res.stderr and "ids from 0:500" in res.stderr


def test_data_file_errors_name_file_and_key(models, tmp_path):
    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    np.savez(good, x=np.ones((6, 16), np.float32))
    np.savez(bad, inputs=np.ones((6, 16), np.float32))
    res = invoke(f"{models['file']}:MLP", models["MLP"], "--data", good, "--json", "-")
    assert res.exit_code == 0 and json.loads(res.stdout)["shapes"][-1]["file"] == str(good)
    res = invoke(f"{models['file']}:MLP", models["MLP"], "--data", bad)
    assert res.exit_code == 2 and str(bad) in res.stderr and "no array named 'x'" in res.stderr


@pytest.mark.parametrize("args, words", [
    (["--tolerance", "y=1e-3"], "OUTPUT=RTOL:ATOL"),
    (["--dim", "batch=0"], "not a positive integer"),
    (["--opt-level", "max"], "unknown --opt-level"),
    (["--samples", "0"], "at least one sample"),
    (["--provider", "cpuu"], "did you mean 'cpu'"),
    (["--junit", "/dev/null/r.xml"], "cannot write --junit /dev/null/r.xml"),
    (["--rtol", "nan"], "must be a finite number"),
])
def test_usage_errors_exit_2(models, args, words):
    res = invoke(f"{models['file']}:MLP", models["MLP"], *args)
    assert res.exit_code == 2 and words in res.stderr, res.stderr


def test_help_defaults_match_the_library():
    from onnxtax.cli import parity as cli_parity
    from onnxtax.parity import ParityOptions

    lib = ParityOptions()
    assert (cli_parity.DEFAULT_RTOL, cli_parity.DEFAULT_ATOL, cli_parity.DEFAULT_SAMPLES, cli_parity.MAX_SHAPES) == (
        lib.rtol, lib.atol, lib.samples, lib.max_shapes)


def test_non_deterministic_source_as_a_user_sees_it(models, cli):
    proc = cli("parity", f"{models['file']}:Noisy", models["MLP"])
    assert proc.returncode == 2
    assert "not deterministic" in proc.stderr and "Traceback" not in proc.stderr


def test_progress_bar_on_a_terminal(models, cli):
    proc = run_cli("parity", f"{models['file']}:MLP", models["MLP"], env={"TTY_COMPATIBLE": "1"})  # its own terminal
    assert proc.returncode == 0, proc.stderr
    assert "\x1b[?25l" in proc.stderr and "parity" in proc.stderr  # the live bar ran (cursor hidden)
    assert "Error" not in proc.stderr and "parity passed" in proc.stdout


def test_unwritable_output_path_refused_before_the_run(models, tmp_path):
    """A --json path inside a file fails at once (no report was computed for nothing); the other
    output is not written either."""
    (tmp_path / "file").write_text("")
    res = invoke(f"{models['file']}:MLP", models["MLP"], "--junit", tmp_path / "ok.xml",
                 "--json", tmp_path / "file" / "r.json")
    assert res.exit_code == 2 and "is not a directory" in res.stderr
    assert "parity" not in res.stdout and not (tmp_path / "ok.xml").exists()
