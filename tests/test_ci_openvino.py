"""Two real hosts, one matrix: `onnxtax ci` in the OpenVINO virtualenv and in the CPU
one, merged with `onnxtax report merge`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from onnxtax.ci import run_ci
from onnxtax.cli import app
from onnxtax.ci import load_config
from tests.test_ci import CONFIG, make_project

OV = "openvino:device_type=CPU"
CONFIG_TWO_PROVIDERS = CONFIG.replace('providers = ["cpu"]', f'providers = ["cpu", "{OV}"]\nskip_unavailable = true')


@pytest.mark.openvino
def test_cpu_host_and_openvino_host_merge_into_one_matrix(ov_python, cli, tmp_path):
    config = make_project(tmp_path, CONFIG_TWO_PROVIDERS)
    proc = cli("ci", "--config", config, "--only", "good", "--reports", tmp_path / "hosts" / "openvino",
               "--host-label", "openvino-host", python=ov_python)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ov_report = json.loads((tmp_path / "hosts" / "openvino" / "good.json").read_text())
    assert ov_report["host"]["versions"]["onnxruntime_package"] == "onnxruntime-openvino"
    assert "OpenVINOExecutionProvider" in ov_report["host"]["compute_providers"]

    cpu = run_ci(load_config(config), only=["good"], reports_dir=tmp_path / "hosts" / "cpu", host_label="cpu-host")
    assert cpu.passed

    result = CliRunner().invoke(app, ["report", "merge", str(tmp_path / "hosts"), "-o", str(tmp_path / "merged"),
                                      "--json", "-"])
    assert result.exit_code == 0, result.output
    matrix = json.loads(result.stdout)
    assert json.loads((tmp_path / "merged" / "matrix.json").read_text()) == matrix
    assert sorted(h["label"] for h in matrix["hosts"]) == ["cpu-host", "openvino-host"]
    rows = {r["provider"]: r for r in matrix["matrix"] if r["model"] == "good"}
    assert set(rows) == {"cpu", OV}
    assert {h: c["verdict"] for h, c in rows["cpu"]["hosts"].items()} == {"cpu-host": "passed",
                                                                         "openvino-host": "passed"}
    ov_cells = rows[OV]["hosts"]
    assert ov_cells["cpu-host"]["verdict"] == "not_available"
    # Good round-trips through float64, which OpenVINO leaves to the CPU provider: it passes, and the
    # matrix says that part of the graph ran elsewhere.
    assert ov_cells["openvino-host"]["verdict"] == "fell_back"
    placement = ov_cells["openvino-host"]["placement"]
    assert 0 < placement["fallback"] < placement["total_nodes"]
    assert rows[OV]["verdict"] == "fell_back"
    assert matrix["conflicts"] == [] and matrix["passed"] is True
    md = (tmp_path / "merged" / "matrix.md").read_text()
    assert f"| good | {OV} | " in md and "⚠️ fell back" in md
