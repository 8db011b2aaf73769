"""run_ci on tiny real models: a passing and a failing model, every report parsed the
way CI systems read it (JUnit by an XML parser, SARIF against its schema)."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from onnxtax.ci import MODEL_SCHEMA, run_ci
from onnxtax.render.sarif import merge_sarif
from onnxtax.ci import load_config
from onnxtax.core import ProviderError
from tests.conftest import run_cli

SARIF_SCHEMA = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"

NETS = '''
import torch
from torch import nn


class Good(nn.Module):
    """Passes everything; the round trip through float64 is a lint warning (not a failure)."""

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.lin = nn.Linear(4, 2)

    def forward(self, x):
        return torch.relu(self.lin(x)).double().float()


class Frozen(nn.Module):
    """Tracing freezes the branch the (small) example input took: wrong for large inputs."""

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.lin = nn.Linear(4, 2)

    def forward(self, x):
        if x.abs().max() > 5:
            x = x.clamp(-5, 5)
        return self.lin(x)
'''

CONFIG = """
exporter = "torchscript"
output_dir = "onnx"

[parity]
samples = 3          # the third sample per shape has magnitude 10: Frozen's other branch
providers = ["cpu"]

[lint]
source = false       # graph rules only: tracing the source is covered by lint's own tests

[models.frozen]
spec = "nets.py:Frozen"
inputs = ["x:batch,4"]

[models.good]
spec = "nets.py:Good"
inputs = ["x:batch,4"]
"""


def make_project(root: Path, config: str = CONFIG) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "nets.py").write_text(NETS)
    (root / "onnxtax.toml").write_text(textwrap.dedent(config))
    return root / "onnxtax.toml"


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """One run of the two-model project; the reports and the step summary it wrote."""
    root = tmp_path_factory.mktemp("ci")
    cfg = load_config(make_project(root))
    summary = root / "step-summary.md"
    old = os.environ.get("GITHUB_STEP_SUMMARY")
    os.environ["GITHUB_STEP_SUMMARY"] = str(summary)
    try:
        report = run_ci(cfg, reports_dir=root / "reports", host_label="test-host")
    finally:
        if old is None:
            os.environ.pop("GITHUB_STEP_SUMMARY", None)
        else:
            os.environ["GITHUB_STEP_SUMMARY"] = old
    return report, root / "reports", summary


def test_one_failing_model_fails_the_run_and_both_are_reported(two_models):
    report, _, _ = two_models
    assert not report and report.exit_code == 1
    frozen, good = report.models
    assert (frozen.name, frozen.status, good.name, good.status) == ("frozen", "failed", "good", "passed")
    assert {k: s.status for k, s in frozen.stages.items()} == {
        "export": "passed", "lint": "passed", "parity": "failed", "runtimes": "off",
        "verify": "not_run", "bench": "off", "serve": "off", "sign": "off",
        "quantize": "off"}
    assert {k: s.status for k, s in good.stages.items()} == {
        "export": "passed", "lint": "passed", "parity": "passed", "runtimes": "off",
        "verify": "passed", "bench": "off", "serve": "off",
        "quantize": "off", "sign": "off"}
    assert "outside" in frozen.stages["parity"].error
    assert frozen.stages["verify"].summary == "not run: parity did not pass"
    assert [(p.label, p.verdict) for p in frozen.providers] == [("cpu", "failed")]
    assert [(p.label, p.verdict) for p in good.providers] == [("cpu", "passed")]
    assert good.providers[0].placement["on_provider"] == good.providers[0].placement["total_nodes"] > 0
    assert good.artifact_sha256 and len(good.artifact_sha256) == 64


def test_junit_has_a_suite_per_model_and_the_right_counts(two_models):
    report, reports, _ = two_models
    root = ET.parse(reports / "junit.xml").getroot()
    assert root.tag == "testsuites"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert list(suites) == ["frozen", "good"]
    frozen_parity = report.models[0].stages["parity"].result
    failed_cases = sum(1 for c in frozen_parity.cases if c.status == "failed")
    assert failed_cases >= 1
    f = suites["frozen"]
    cases = f.findall("testcase")
    # export, lint-ops, one per shape x output on cpu (3 default shapes, 1 output), verify (skipped)
    assert len(cases) == int(f.get("tests")) == 2 + len(frozen_parity.cases) + 1
    assert int(f.get("failures")) == failed_cases == len([c for c in cases if c.find("failure") is not None])
    assert int(f.get("skipped")) == 1 and int(f.get("errors")) == 0
    skipped = [c for c in cases if c.find("skipped") is not None]
    assert skipped[0].get("name") == "manifest verify"
    parity_names = [c.get("name") for c in cases if c.get("classname") == "onnxtax.frozen.parity.cpu"]
    assert parity_names == [f"parity cpu {c.shape} {c.output}" for c in frozen_parity.cases]
    failure = next(c.find("failure") for c in cases if c.find("failure") is not None)
    assert "max_abs_diff=" in failure.text
    g = suites["good"]
    assert (int(g.get("failures")), int(g.get("errors")), int(g.get("skipped"))) == (0, 0, 0)
    props = {p.get("name"): p.get("value") for p in g.find("properties")}
    assert props["artifact_sha256"] == report.models[1].artifact_sha256 and props["host"] == "test-host"
    assert int(root.get("tests")) == int(f.get("tests")) + int(g.get("tests"))
    assert int(root.get("failures")) == failed_cases


def test_sarif_is_one_valid_run_with_every_models_findings(two_models):
    report, reports, _ = two_models
    log = json.loads((reports / "lint.sarif").read_text())
    jsonschema.validate(log, json.loads(SARIF_SCHEMA.read_text()))
    assert len(log["runs"]) == 1
    run = log["runs"][0]
    rules = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert len(rules) == len(set(rules))
    results = run["results"]
    good_findings = report.models[1].stages["lint"].result.findings
    assert any(f.rule == "float64" for f in good_findings)
    lint_results = [r for r in results if r["ruleId"] != "parity-divergence"]
    assert len(lint_results) == sum(len(m.stages["lint"].result.findings) for m in report.models)
    # the frozen model's parity failure is localised ([parity] localize is on by default): at its `if` line
    (divergence,) = [r for r in results if r["ruleId"] == "parity-divergence"]
    where = divergence["locations"][0]["physicalLocation"]
    assert where["artifactLocation"]["uri"].endswith("nets.py")
    assert where["region"]["startLine"] == NETS.splitlines().index("        if x.abs().max() > 5:") + 1
    for res in results:
        assert rules[res["ruleIndex"]] == res["ruleId"]
    assert [m["model"] for m in run["properties"]["models"]] == [str(m.config.output) for m in report.models]


def test_model_report_json_holds_every_stage_the_manifest_and_the_host(two_models):
    report, reports, _ = two_models
    data = json.loads((reports / "good.json").read_text())
    assert data["schema"] == MODEL_SCHEMA and data["model"] == "good" and data["status"] == "passed"
    assert set(data["stages"]) == {"export", "lint", "parity", "runtimes", "verify", "bench", "serve", "quantize",
                                   "sign"}
    assert data["stages"]["export"]["result"]["opset"] == 18
    assert data["stages"]["parity"]["result"]["schema"] == "onnxtax.parity/2"
    assert data["stages"]["lint"]["result"]["format_version"] == 1
    assert data["stages"]["verify"]["result"]["passed"] is True
    assert data["stages"]["bench"] == {"status": "off", "seconds": 0.0, "summary": "not configured", "error": None,
                                       "hint": None, "memory": None, "result": None}
    assert data["manifest"]["artifact"]["sha256"] == data["artifact_sha256"]
    assert data["host"]["label"] == "test-host"
    assert "CPUExecutionProvider" in data["host"]["providers_available"]
    assert data["host"]["versions"]["onnxruntime"]
    assert data["config"]["export"]["exporter"] == "torchscript"
    whole = json.loads((reports / "ci.json").read_text())
    assert whole["exit_code"] == 1 and whole["counts"] == {"passed": 1, "failed": 1, "error": 0, "not_run": 0}
    assert json.loads((reports / "host.json").read_text())["label"] == "test-host"


def test_every_stage_that_ran_records_its_own_peak_memory(two_models):
    _, reports, _ = two_models
    stages = json.loads((reports / "good.json").read_text())["stages"]
    ran = {name: s["memory"] for name, s in stages.items() if s["status"] == "passed"}
    assert set(ran) == {"export", "lint", "parity", "verify"}
    assert ran["export"]["weights_bytes"] == (4 * 2 + 2) * 4  # Linear(4, 2): the module's parameters
    for name, mem in ran.items():
        assert mem == stages[name]["result"]["memory"]
        assert mem["peak_rss_bytes"] > 0 and mem["preflight"]["fits"] is True, name
    md = (reports / "summary.md").read_text()
    assert "| peak memory | time |" in md and " MB " in md


def test_markdown_summary_written_and_appended_to_the_step_summary(two_models):
    _, reports, summary = two_models
    md = (reports / "summary.md").read_text()
    assert md.startswith("## ❌ onnxtax ci failed: 1 of 2 models")
    assert "| **good** | ✅" in md and "| **frozen** | ✅" in md
    assert "- **frozen** parity failed:" in md
    assert summary.read_text() == md.rstrip() + "\n\n"


def test_only_runs_the_named_models_and_drops_stale_reports(two_models, tmp_path):
    report, reports, _ = two_models
    out = tmp_path / "reports"
    out.mkdir()
    shutil.copy(reports / "frozen.json", out / "frozen.json")  # from an earlier run
    (out / "notes.json").write_text('{"mine": true}')  # not onnxtax's: kept
    cfg = load_config(report.config_path)
    again = run_ci(cfg, only=["good"], reports_dir=out)
    assert [m.name for m in again.models] == ["good"] and again.exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["ci.json", "good.json", "host.json", "junit.xml",
                                                    "lint.sarif", "notes.json", "summary.md"]
    assert [s.get("name") for s in ET.parse(out / "junit.xml").getroot()] == ["good"]


def test_fail_fast_leaves_later_models_not_run(two_models):
    report, _, _ = two_models
    cfg = load_config(report.config_path)
    fast = run_ci(cfg, keep_going=False, write=False)
    assert [m.status for m in fast.models] == ["failed", "not_run"]
    assert fast.models[1].stages["export"].summary.startswith("not run")
    assert [(p.label, p.verdict) for p in fast.models[1].providers] == [("cpu", "not_run")]
    assert fast.exit_code == 1


def test_a_model_that_cannot_load_is_recorded_as_error_and_the_others_still_run(tmp_path):
    cfg = load_config(make_project(tmp_path, CONFIG.replace("nets.py:Frozen", "nets.py:Missing")))
    report = run_ci(cfg, write=False)
    broken, good = report.models
    assert broken.stages["export"].status == "error"
    assert "has no attribute 'Missing'" in broken.stages["export"].error
    assert "Frozen" in broken.stages["export"].hint  # the loader lists the modules there
    assert broken.stages["lint"].status == "not_run"
    assert good.passed and report.exit_code == 2


def test_providers_this_host_lacks_fail_before_anything_runs_unless_skipped(tmp_path):
    cfg = load_config(make_project(tmp_path))
    with pytest.raises(ProviderError, match="not available on this host"):
        run_ci(cfg, providers=["cpu", "cuda"], write=False)
    assert not (tmp_path / "onnx").exists()
    report = run_ci(cfg, only=["good"], providers=["cpu", "cuda"], skip_unavailable=True, write=False)
    assert [(p.label, p.verdict) for p in report.models[0].providers] == [("cpu", "passed"),
                                                                           ("cuda", "not_available")]
    assert report.passed


def test_bench_gates_become_testcases(tmp_path):
    config = CONFIG + """
[models.good.bench]
batch_sizes = [1]
min_time = 0.02
warmup = 3
max_latency_ms = { p99 = 10000.0 }
min_speedup = 1000000.0   # ORT is not a million times faster than eager: this gate fails
"""
    cfg = load_config(make_project(tmp_path, config))
    report = run_ci(cfg, only=["good"], reports_dir=tmp_path / "reports")
    bench = report.models[0].stages["bench"]
    assert bench.status == "failed" and "speedup" in bench.error
    assert report.exit_code == 1
    suite = ET.parse(tmp_path / "reports" / "junit.xml").getroot().find("testsuite")
    gates = [c for c in suite if c.get("classname") == "onnxtax.good.bench.gates"]
    assert [c.get("name") for c in gates] == ["max_latency_ms p99 ort:cpu batch=1",
                                              "min_speedup eager/ort p50 ort:cpu batch=1"]
    assert [c.find("failure") is not None for c in gates] == [False, True]


def test_merge_sarif_renumbers_rules_and_artifacts():
    def log(rules: list[str], results: list[tuple[int, int]], files: list[str]) -> dict:
        return {"version": "2.1.0", "runs": [{
            "tool": {"driver": {"name": "onnxtax", "rules": [{"id": r} for r in rules]}},
            "artifacts": [{"location": {"uri": f}} for f in files],
            "results": [{"ruleId": rules[r], "ruleIndex": r, "message": {"text": "m"},
                         "locations": [{"physicalLocation": {"artifactLocation": {"uri": files[a], "index": a}}}]}
                        for r, a in results]}]}

    merged = merge_sarif([log(["a", "b"], [(1, 0)], ["x.onnx"]), log(["b", "c"], [(0, 0), (1, 1)],
                                                                      ["y.onnx", "x.onnx"])])
    jsonschema.validate(merged, json.loads(SARIF_SCHEMA.read_text()))
    run = merged["runs"][0]
    rules = [r["id"] for r in run["tool"]["driver"]["rules"]]
    files = [a["location"]["uri"] for a in run["artifacts"]]
    assert rules == ["a", "b", "c"] and files == ["x.onnx", "y.onnx"]
    for res in run["results"]:
        assert rules[res["ruleIndex"]] == res["ruleId"]
        loc = res["locations"][0]["physicalLocation"]["artifactLocation"]
        assert files[loc["index"]] == loc["uri"]
    assert len(merge_sarif([])["runs"]) == 1


def test_reuse_artifacts_tests_the_existing_bytes_and_still_verifies_them(tmp_path):
    cfg = load_config(make_project(tmp_path))
    first = run_ci(cfg, only=["good"], write=False)
    sha = first.models[0].artifact_sha256
    reused = run_ci(cfg, only=["good"], write=False, reuse_artifacts=True)
    export = reused.models[0].stages["export"]
    assert export.status == "passed" and export.summary.startswith(f"reused the existing artifact (sha256 {sha[:12]}")
    assert export.result["reused"] is True
    assert reused.passed and reused.models[0].artifact_sha256 == sha
    # an artifact whose bytes no longer match its manifest fails at verify
    manifest_path = tmp_path / "onnx" / "good.manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["artifact"]["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    tampered = run_ci(cfg, only=["good"], write=False, reuse_artifacts=True)
    verify = tampered.models[0].stages["verify"]
    assert verify.status == "failed" and "good.onnx changed" in verify.error
    assert tampered.exit_code == 1
    # a model with no artifact yet is exported
    fresh = run_ci(cfg, only=["frozen"], write=False, reuse_artifacts=True)
    assert fresh.models[0].stages["export"].summary.startswith("torchscript")


def test_an_interrupted_run_leaves_reports_of_this_run_only(two_models, tmp_path):
    """Ctrl-C (or a cancelled CI job's SIGINT) between models: the finished model's report
    stays, the run-level files describe this run (interrupted), none of an earlier run's remain."""
    report, reports, _ = two_models
    out = tmp_path / "reports"
    shutil.copytree(reports, out)  # an earlier, complete run in the same folder

    def interrupt(model, stage, result):
        if model == "good" and result is None:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_ci(load_config(report.config_path), reports_dir=out, reuse_artifacts=True, on_stage=interrupt)
    assert sorted(p.name for p in out.iterdir()) == ["ci.json", "frozen.json", "host.json", "junit.xml",
                                                    "lint.sarif", "summary.md"]
    run = json.loads((out / "ci.json").read_text())
    assert run["interrupted"] is True and run["passed"] is False and run["exit_code"] == 130
    assert [(m["model"], m["status"]) for m in run["models"]] == [("frozen", "failed"), ("good", "not_run")]
    assert run["models"][1]["stages"]["export"]["summary"] == "not run: the run was interrupted"
    assert (out / "summary.md").read_text().startswith("## ⛔ onnxtax ci interrupted: 1 of 2 models finished")
    suites = ET.parse(out / "junit.xml").getroot()
    assert [s.get("name") for s in suites] == ["frozen", "good"]
    assert suites[1].get("skipped") == suites[1].get("tests")


def test_a_run_killed_before_its_end_leaves_no_earlier_run_level_files(two_models, tmp_path):
    report, reports, _ = two_models
    out = tmp_path / "reports"
    shutil.copytree(reports, out)
    (out / "notes.md").write_text("mine")
    from onnxtax.ci.run import _clear_stale_reports

    _clear_stale_reports(out)  # what a run does first; a SIGKILL right after leaves this folder
    assert sorted(p.name for p in out.iterdir()) == ["notes.md"]


DIES = '''
import json
import os
import signal

import torch
from torch import nn


class Dies(nn.Module):
    """Killed with SIGKILL, as by the OOM killer, when it runs in the parity stage."""

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.lin = nn.Linear(4, 2)

    def forward(self, x):
        marker = os.environ["ONNXTAX_TEST_RUNNING"]
        if os.path.exists(marker):
            with open(marker) as f:
                if json.load(f)["stage"] == "parity":
                    os.kill(os.getpid(), signal.SIGKILL)
        return self.lin(x)
'''


def test_a_run_killed_in_a_stage_leaves_running_json_naming_it(cli, tmp_path):
    (tmp_path / "dies.py").write_text(DIES)
    (tmp_path / "onnxtax.toml").write_text(textwrap.dedent('''
        exporter = "torchscript"
        [parity]
        samples = 1
        providers = ["cpu"]
        [lint]
        source = false
        [models.dies]
        spec = "dies.py:Dies"
        inputs = ["x:batch,4"]
    '''))
    reports = tmp_path / "reports"
    proc = run_cli("ci", "--reports", reports, cwd=tmp_path,  # killed: a process of its own
                   env={"ONNXTAX_TEST_RUNNING": str(reports / "running.json")})
    assert proc.returncode == -9, proc.stderr  # SIGKILL: no ci.json, no model report
    assert not (reports / "ci.json").exists() and not (reports / "dies.json").exists()
    running = json.loads((reports / "running.json").read_text())
    assert (running["schema"], running["model"], running["stage"]) == ("onnxtax.ci.running/1", "dies", "parity")
    assert running["rss_bytes"] > 0 and running["available_bytes"] > running["rss_bytes"]
    from onnxtax.ci.run import _clear_stale_reports

    _clear_stale_reports(reports)  # the next run starts clean
    assert not (reports / "running.json").exists()


COUNTED = '''
import os
import torch
from torch import nn


class Counted(nn.Module):
    def __init__(self):
        super().__init__()
        with open(os.environ["ONNXTAX_TEST_BUILDS"], "a") as log:
            log.write(f"{os.getpid()}\\n")
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.lin = nn.Linear(4, 2)

    def forward(self, x):
        return self.lin(x)
'''


def test_each_model_is_built_once_for_every_stage(tmp_path, monkeypatch):
    """export, lint (source rules on), parity and bench share one build of the model; only
    bench's cold start builds it again, in fresh processes, which is what it measures."""
    builds = tmp_path / "builds.log"
    monkeypatch.setenv("ONNXTAX_TEST_BUILDS", str(builds))
    (tmp_path / "counted.py").write_text(COUNTED)
    (tmp_path / "onnxtax.toml").write_text(textwrap.dedent("""
        exporter = "torchscript"
        [parity]
        samples = 1
        providers = ["cpu"]
        [lint]
        source = true
        [models.counted]
        spec = "counted.py:Counted"
        inputs = ["x:batch,4"]
        [models.counted.bench]
        batch_sizes = [1]
        min_time = 0.01
        warmup = 1
        cold_start = false
    """))
    report = run_ci(load_config(tmp_path / "onnxtax.toml"), write=False)
    assert report.passed, report.models[0].first_problem
    assert [s for s in report.models[0].stages] == ["export", "lint", "parity", "runtimes", "verify", "bench",
                                                    "serve", "quantize", "sign"]
    assert builds.read_text().split() == [str(os.getpid())]


def test_a_path_that_fails_in_the_bench_stage_fails_the_run_with_exit_1(tmp_path):
    """ORT cannot run the exported Table model at batch 64 (torch.export assumed batch <= 32):
    a failed check, so exit 1 and a JUnit <failure>, the same verdict `onnxtax bench` gives."""
    from tests.models import tiny

    (tmp_path / "onnxtax.toml").write_text(textwrap.dedent(f"""
        [parity]
        samples = 1
        providers = ["cpu"]
        [lint]
        source = false
        [models.table]
        spec = "{tiny.spec('Table')}"
        inputs = ["x:batch,16"]
        [models.table.parity]
        dims = {{ batch = [1, 4] }}
        test_assumed = false        # parity would fail at batch 33: this test is about bench
        [models.table.bench]
        batch_sizes = [1, 64]
        min_time = 0.01
        warmup = 1
        cold_start = false
    """))
    report = run_ci(load_config(tmp_path / "onnxtax.toml"), reports_dir=tmp_path / "reports")
    bench = report.models[0].stages["bench"]
    assert (bench.status, report.exit_code) == ("failed", 1), bench.error
    assert "ort:cpu failed at batch size 64" in bench.error
    assert [p.status for p in bench.result.paths] == ["measured", "failed"]
    suite = ET.parse(tmp_path / "reports" / "junit.xml").getroot().find("testsuite")
    case = next(c for c in suite.findall("testcase") if c.get("name") == "bench")
    assert case.find("failure") is not None and case.find("error") is None
