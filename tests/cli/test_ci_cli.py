"""`onnxtax ci` as a pipeline runs it: exit codes, --json on stdout, progress on stderr,
--only, provider flags, the config found from the working directory."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from onnxtax.cli import app
from tests.test_ci import CONFIG, make_project


def test_ci_json_subprocess_exit_1_with_both_models(cli, tmp_path):
    make_project(tmp_path)
    proc = cli("ci", "--json", "-", "--host-label", "ci-test", cwd=tmp_path)  # config found from the cwd
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)  # stdout is only the JSON
    assert data["schema"] == "onnxtax.ci/1" and data["exit_code"] == 1
    assert [(m["model"], m["status"]) for m in data["models"]] == [("frozen", "failed"), ("good", "passed")]
    assert data["reports_dir"] == str(tmp_path / "onnxtax-reports")  # default: beside the config
    assert (tmp_path / "onnxtax-reports" / "junit.xml").is_file()
    # progress and the verdict went to stderr
    assert "frozen    parity          FAIL" in proc.stderr
    assert "frozen parity failed:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_ci_only_and_the_summary_table(tmp_path):
    config = make_project(tmp_path)
    result = CliRunner().invoke(app, ["ci", "--config", str(config), "--only", "good",
                                      "--reports", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "onnxtax ci: 1 model from" in result.output
    assert "good      export          pass" in result.output
    assert "(peak " in result.output and "peak memory" in result.output  # per stage, then the table's column
    assert "onnxtax ci passed: 1 model" in result.output
    assert "frozen" not in result.output
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["ci.json", "good.json", "host.json",
                                                                 "junit.xml", "lint.sarif", "summary.md"]


def test_ci_usage_errors_exit_2_before_running(tmp_path):
    config = make_project(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["ci", "--config", str(config), "--only", "godo"])
    assert result.exit_code == 2
    assert "--only godo: no model 'godo'" in result.output and "did you mean 'good'?" in result.output
    result = runner.invoke(app, ["ci", "--config", str(config), "--provider", "cuda"])
    assert result.exit_code == 2
    assert "CUDAExecutionProvider is not available on this host" in result.output
    assert "--skip-unavailable" in result.output
    assert not (tmp_path / "onnx").exists() and not (tmp_path / "onnxtax-reports").exists()
    # providers named on the command line must be on this host, even when the config skips missing ones
    lenient = make_project(tmp_path / "lenient", CONFIG.replace('providers = ["cpu"]',
                                                                'providers = ["cpu"]\nskip_unavailable = true'))
    result = runner.invoke(app, ["ci", "--config", str(lenient), "-p", "cuda"])
    assert result.exit_code == 2 and "CUDAExecutionProvider is not available" in result.output


def test_ci_provider_flags_override_the_config(tmp_path):
    config = make_project(tmp_path)
    result = CliRunner().invoke(app, ["ci", "--config", str(config), "--only", "good", "-p", "cpu", "-p", "cuda",
                                      "--skip-unavailable", "--json", "-", "--reports", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [(p["label"], p["verdict"]) for p in data["models"][0]["providers"]] == [("cpu", "passed"),
                                                                                   ("cuda", "not_available")]


def test_help_lists_the_options():
    runner = CliRunner()
    result = runner.invoke(app, ["ci", "--help"])
    assert result.exit_code == 0
    for option in ("--config", "--only", "--reports", "--keep-going", "--fail-fast", "--provider",
                   "--skip-unavailable", "--no-bench", "--host-label", "--json", "--debug"):
        assert option in result.output
    result = runner.invoke(app, ["report", "merge", "--help"])
    assert result.exit_code == 0 and "--output" in result.output
