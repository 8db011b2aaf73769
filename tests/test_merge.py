"""`onnxtax report merge` on synthetic host reports: the matrix, conflicts, labels, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from onnxtax.ci import MODEL_SCHEMA, RUN_SCHEMA
from onnxtax.cli import app
from onnxtax.core import OnnxtaxError
from onnxtax.ci import merge_reports, write_matrix

SHA = "a" * 64
OTHER_SHA = "b" * 64


def provider(label: str, verdict: str, reason: str | None = None) -> dict:
    names = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "openvino:device_type=CPU": "OpenVINOExecutionProvider"}
    return {"provider": names[label], "label": label, "verdict": verdict, "reason": reason, "placement": None}


def write_host(folder: Path, label: str, models: dict[str, tuple[str, list[dict]]], sha: str = SHA,
               package: str = "onnxruntime", interrupted: bool = False, ci_json: bool = True) -> Path:
    """One host's reports folder as `onnxtax ci` writes it: {model: (status, providers)}, then ci.json."""
    folder.mkdir(parents=True, exist_ok=True)
    host = {"label": label, "hostname": label + "-machine", "cpu": "Test CPU", "gpus": [],
            "compute_providers": ["CPUExecutionProvider"], "versions": {"onnxruntime_package": package,
                                                                         "onnxruntime": "1.0"}}
    reports = []
    for name, (status, providers) in models.items():
        stages = {"export": {"status": "passed", "error": None}, "parity": {
            "status": status, "error": None if status == "passed" else f"{name} parity broke"}}
        report = {"schema": MODEL_SCHEMA, "model": name, "status": status, "passed": status == "passed",
                  "artifact_sha256": sha, "stages": stages, "providers": providers, "host": host}
        (folder / f"{name}.json").write_text(json.dumps(report))
        reports.append(report)
    (folder / "host.json").write_text(json.dumps(host))  # not a model report: ignored
    if ci_json:
        passed = not interrupted and all(r["status"] == "passed" for r in reports)
        run = {"schema": RUN_SCHEMA, "passed": passed, "interrupted": interrupted, "host": host, "models": reports,
               "exit_code": 130 if interrupted else 0 if passed else 1}
        (folder / "ci.json").write_text(json.dumps(run))
    return folder


def test_cpu_and_openvino_hosts_make_one_matrix(tmp_path):
    cpu = write_host(tmp_path / "cpu", "cpu-runner", {
        "fraud": ("passed", [provider("cpu", "passed"), provider("openvino:device_type=CPU", "not_available")]),
        "tagger": ("passed", [provider("cpu", "passed"), provider("openvino:device_type=CPU", "not_available")])})
    ov = write_host(tmp_path / "ov", "openvino-runner", {
        "fraud": ("passed", [provider("cpu", "passed"), provider("openvino:device_type=CPU", "passed")]),
        "tagger": ("passed", [provider("cpu", "passed"),
                              provider("openvino:device_type=CPU", "fell_back", "2 of 40 nodes ran elsewhere")])},
        package="onnxruntime-openvino")
    matrix = merge_reports([cpu, ov])
    assert matrix.passed and not matrix.conflicts
    rows = {(r.model, r.provider): r for r in matrix.rows}
    assert list(rows) == [("fraud", "cpu"), ("fraud", "openvino:device_type=CPU"), ("tagger", "cpu"),
                          ("tagger", "openvino:device_type=CPU")]
    ov_row = rows[("fraud", "openvino:device_type=CPU")]
    assert ov_row.cells["cpu-runner"]["verdict"] == "not_available"
    assert ov_row.cells["openvino-runner"]["verdict"] == "passed"
    assert ov_row.verdict == "passed"
    assert rows[("tagger", "openvino:device_type=CPU")].verdict == "fell_back"
    data = matrix.to_dict()
    assert data["schema"] == "onnxtax.matrix/1" and data["passed"] is True
    assert [h["label"] for h in data["hosts"]] == ["cpu-runner", "openvino-runner"]
    assert data["hosts"][1]["onnxruntime_package"] == "onnxruntime-openvino"
    md = matrix.markdown()
    assert "| fraud | openvino:device_type=CPU | ➖ not available | ✅ passed | **✅ passed** |" in md
    assert "tagger / openvino:device_type=CPU on openvino-runner: fell_back: 2 of 40 nodes" in md


def test_same_artifact_passing_on_one_host_and_failing_on_another_is_a_conflict(tmp_path):
    a = write_host(tmp_path / "a", "host-a", {"fraud": ("passed", [provider("cpu", "passed")])})
    b = write_host(tmp_path / "b", "host-b", {"fraud": ("failed", [provider("cpu", "failed", "batch=7 output: "
                                                                               "3/7 elements outside")])})
    matrix = merge_reports([a, b])
    assert not matrix.passed
    assert len(matrix.conflicts) == 1
    c = matrix.conflicts[0]
    assert (c.model, c.provider, c.artifact_sha256, c.passed_on, c.failed_on) == (
        "fraud", "cpu", SHA, ["host-a"], ["host-b"])
    assert c.reasons == {"host-b": "batch=7 output: 3/7 elements outside"}
    assert matrix.rows[0].verdict == "conflict"
    md = matrix.markdown()
    assert "1 conflicting verdict" in md and "passed on host-a, failed on host-b" in md


def test_different_artifacts_are_noted_not_conflicts(tmp_path):
    a = write_host(tmp_path / "a", "host-a", {"fraud": ("passed", [provider("cpu", "passed")])})
    b = write_host(tmp_path / "b", "host-b", {"fraud": ("failed", [provider("cpu", "failed")])}, sha=OTHER_SHA)
    matrix = merge_reports([a, b])
    assert not matrix.conflicts
    assert not matrix.passed  # host-b still failed
    assert matrix.rows[0].verdict == "failed"
    assert any("hosts tested different artifacts" in n for n in matrix.notes)


def test_nested_artifact_folders_and_duplicate_labels(tmp_path):
    # `actions/download-artifact` puts each artifact in its own folder under one path
    root = tmp_path / "downloads"
    write_host(root / "onnxtax-reports-cpu", "runner", {"fraud": ("passed", [provider("cpu", "passed")])})
    write_host(root / "onnxtax-reports-gpu", "runner", {"fraud": ("passed", [provider("cpu", "passed"),
                                                                              provider("cuda", "passed")])})
    matrix = merge_reports([root])
    labels = [h.label for h in matrix.hosts]
    assert labels == ["runner [onnxtax-reports-cpu]", "runner [onnxtax-reports-gpu]"]
    cuda = next(r for r in matrix.rows if r.provider == "cuda")
    assert list(cuda.cells) == ["runner [onnxtax-reports-gpu]"]
    assert matrix.passed


def test_folders_without_reports_are_usage_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(OnnxtaxError, match="no onnxtax ci model reports"):
        merge_reports([tmp_path / "empty"])
    with pytest.raises(OnnxtaxError, match="does not exist"):
        merge_reports([tmp_path / "nope"])


def test_cli_merge_writes_matrix_and_exits_1_on_conflict(tmp_path, monkeypatch):
    a = write_host(tmp_path / "a", "host-a", {"fraud": ("passed", [provider("cpu", "passed")])})
    b = write_host(tmp_path / "b", "host-b", {"fraud": ("failed", [provider("cpu", "failed")])})
    summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    runner = CliRunner()
    result = runner.invoke(app, ["report", "merge", str(a), str(b), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert "conflict" in result.output
    data = json.loads((tmp_path / "out" / "matrix.json").read_text())
    assert data["conflicts"][0]["failed_on"] == ["host-b"]
    assert (tmp_path / "out" / "matrix.md").read_text() == summary.read_text().rstrip() + "\n"

    result = runner.invoke(app, ["report", "merge", str(a), "--json", "-"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["passed"] is True and data["matrix"][0]["hosts"]["host-a"]["verdict"] == "passed"

    result = runner.invoke(app, ["report", "merge", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_write_matrix_is_atomic_output(tmp_path):
    a = write_host(tmp_path / "a", "host-a", {"fraud": ("passed", [provider("cpu", "passed")])})
    written = write_matrix(merge_reports([a]), tmp_path / "out")
    assert [p.name for p in written] == ["matrix.json", "matrix.md"]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------ a gate that cannot be fooled by its reports

def merge_cli(*args: str):
    return CliRunner().invoke(app, ["report", "merge", *map(str, args)])


def test_an_interrupted_run_fails_the_merge_though_its_finished_model_passed(tmp_path):
    # `onnxtax ci` stopped after 1 of 3 models: the finished one passed, the others are not_run
    run = write_host(tmp_path / "cpu", "cpu-runner", {
        "fraud": ("passed", [provider("cpu", "passed")]),
        "image": ("not_run", [provider("cpu", "not_run")]), "tagger": ("not_run", [provider("cpu", "not_run")])},
        interrupted=True)
    matrix = merge_reports([run])
    assert not matrix.passed
    assert matrix.hosts[0].problems == ["interrupted (exit 130): 1 of 3 models finished"]
    assert "### Runs that did not pass" in matrix.markdown()
    result = merge_cli(run)
    assert result.exit_code == 1, result.output
    assert "interrupted (exit 130)" in result.output


def test_model_reports_without_ci_json_fail_the_merge(tmp_path):
    # a run killed (SIGKILL, OOM) before its end writes model reports but never ci.json
    run = write_host(tmp_path / "cpu", "cpu-runner", {"fraud": ("passed", [provider("cpu", "passed")])},
                     ci_json=False)
    matrix = merge_reports([run])
    assert not matrix.passed and "no ci.json" in matrix.hosts[0].problems[0]
    assert merge_cli(run).exit_code == 1


def test_a_killed_run_names_the_stage_it_stopped_in_from_running_json(tmp_path):
    run = write_host(tmp_path / "cpu", "cpu-runner", {"fraud": ("passed", [provider("cpu", "passed")])},
                     ci_json=False)
    (run / "running.json").write_text(json.dumps({"schema": "onnxtax.ci.running/1", "model": "llm",
                                                  "stage": "parity", "pid": 1}))
    problem = merge_reports([run]).hosts[0].problems[0]
    assert problem.endswith("it stopped during the parity stage of model 'llm' (running.json)")


def test_the_matrix_carries_each_models_highest_stage_peak_per_host(tmp_path):
    run = write_host(tmp_path / "cpu", "cpu-runner", {"fraud": ("passed", [provider("cpu", "passed")]),
                                                     "old": ("passed", [provider("cpu", "passed")])})
    report = json.loads((run / "fraud.json").read_text())
    report["stages"]["export"]["memory"] = {"weights_bytes": 2_680_000_000, "peak_rss_bytes": 2_920_000_000}
    report["stages"]["parity"]["memory"] = {"weights_bytes": 2_680_000_000, "peak_rss_bytes": 2_780_000_000}
    (run / "fraud.json").write_text(json.dumps(report))
    matrix = merge_reports([run])
    assert matrix.to_dict()["hosts"][0]["peak_memory"] == {  # "old": written before memory was recorded
        "fraud": {"stage": "export", "peak_rss_bytes": 2_920_000_000, "weights_bytes": 2_680_000_000}}
    from onnxtax.ci import matrix_markdown

    assert "✅ passed `aaaaaaaaaaaa`, peak 2.92 GB export |" in matrix_markdown(matrix)


def test_a_failed_model_whose_report_is_gone_still_fails_through_ci_json(tmp_path):
    run = write_host(tmp_path / "cpu", "cpu-runner", {"fraud": ("passed", [provider("cpu", "passed")]),
                                                       "image": ("failed", [provider("cpu", "failed")])})
    (run / "image.json").unlink()
    matrix = merge_reports([run])
    assert not matrix.passed
    assert matrix.hosts[0].models["image"]["status"] == "failed"
    assert merge_cli(run).exit_code == 1


def test_a_truncated_report_is_exit_2_naming_it(tmp_path):
    run = write_host(tmp_path / "cpu", "cpu-runner", {"fraud": ("passed", [provider("cpu", "passed")]),
                                                       "image": ("failed", [provider("cpu", "failed")])})
    text = (run / "image.json").read_text()
    (run / "image.json").write_text(text[: len(text) // 2])
    (run / "ci.json").unlink()  # the run was killed while writing
    result = merge_cli(run)
    assert result.exit_code == 2, result.output
    assert f"report {run / 'image.json'} is unreadable" in " ".join(result.output.split())
    assert "Traceback" not in result.output


@pytest.mark.parametrize("edit, where", [
    (lambda r: r.update(providers=None), "providers is null"),
    (lambda r: r.update(stages={"parity": None}), "stages.parity is null"),
    (lambda r: r["providers"][0].update(verdict=5), "providers[0].verdict is 5"),
    (lambda r: r.update(status=["passed"]), "status is [\"passed\"]"),
    (lambda r: r.update(model=None), "model is null"),
    (lambda r: r.update(host="cpu"), "host is \"cpu\""),
])
def test_wrong_types_and_nulls_are_exit_2_naming_the_key(tmp_path, edit, where):
    run = write_host(tmp_path / "cpu", "cpu-runner", {"fraud": ("passed", [provider("cpu", "passed")])})
    report = json.loads((run / "fraud.json").read_text())
    edit(report)
    (run / "fraud.json").write_text(json.dumps(report))
    result = merge_cli(run)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"report {run / 'fraud.json'} is not a valid onnxtax ci report: {where}" in text
    assert "Traceback" not in result.output


def test_wrong_types_in_ci_json_are_exit_2(tmp_path):
    run = write_host(tmp_path / "cpu", "cpu-runner", {"fraud": ("passed", [provider("cpu", "passed")])})
    data = json.loads((run / "ci.json").read_text())
    data["interrupted"] = "no"
    (run / "ci.json").write_text(json.dumps(data))
    result = merge_cli(run)
    assert result.exit_code == 2 and "interrupted is \"no\", expected bool" in " ".join(result.output.split())


def test_a_folder_given_twice_counts_once(tmp_path):
    run = write_host(tmp_path / "cpu", "cpu-runner", {"fraud": ("passed", [provider("cpu", "passed")])})
    matrix = merge_reports([run, Path(str(run) + "/")])
    assert [h.label for h in matrix.hosts] == ["cpu-runner"] and matrix.passed
