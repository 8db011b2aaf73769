"""`onnxtax quantize` as a user runs it, and the quantized artifact through verify, lint-ops, parity and ci."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from typer.testing import CliRunner

from onnxtax.cli import app
from tests.conftest import run_cli
from tests.models import tiny

SPEC = tiny.spec("Tiny")


def invoke(*args):
    """In-process (CliRunner): the same command a user types, without a new interpreter per call."""
    return CliRunner().invoke(app, [str(a) for a in args])

@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from onnxtax.export import export_model

    root = tmp_path_factory.mktemp("qcli")
    assert export_model(SPEC, root / "scorer.onnx", ["x:batch,16"], exporter="torchscript")
    rng = np.random.default_rng(7)
    np.savez(root / "cal.npz", x=rng.standard_normal((256, 16)).astype(np.float32))
    np.savez(root / "ordinary.npz", x=rng.standard_normal((600, 16)).astype(np.float32))
    tail = rng.standard_normal((30, 16)).astype(np.float32)
    tail[:, :4] *= 25
    np.savez(root / "tail.npz", x=tail)
    return root


def _args(root, *extra):
    return ["quantize", SPEC, root / "scorer.onnx", "--eval", f"ordinary={root}/ordinary.npz",
            "--eval", f"tail={root}/tail.npz", "--calibration", root / "cal.npz", "--mode", "static",
            "--bench-batch-sizes", "1", "--bench-min-time", "0.02", *extra]


def test_refused_names_segment_metric_value_budget_and_aggregate_and_writes_nothing(project):
    out = project / "refused.int8.onnx"
    result = invoke(*_args(project, "-o", out, "--budget", "agreement@0.5=0.85"))
    assert result.exit_code == 1, result.output
    text = result.output
    assert "quantize REFUSED" in text and "nothing was written" in text
    line = next(ln for ln in text.splitlines() if "tail: agreement@0.5" in ln)
    assert "below the budget >= 0.85" in line and "aggregate" in line and "would have approved" in line
    assert "(aggregate)" in text  # the aggregate row of the table
    assert not out.exists() and not (project / "refused.int8.manifest.json").exists()


def test_approved_writes_model_and_manifest_that_verify_lint_and_parity_accept(project):
    out = project / "ok.int8.onnx"
    report = project / "q.json"
    proc = run_cli(*_args(project, "-o", out, "--budget", "agreement@0.5=0.85", "--budget", "tail:agreement@0.5=0.5",
                          "--json", report))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "quantize approved" in proc.stdout and "latency" in proc.stdout
    data = json.loads(report.read_text())
    assert data["passed"] and data["written"] and data["chosen"] == 0
    manifest = json.loads((project / "ok.int8.manifest.json").read_text())
    q = manifest["quantization"]
    assert q["mode"] == "static" and q["format"] == "qdq" and q["source"]["sha256"] == data["source"]["sha256"]
    assert [s["name"] for s in q["segments"]] == ["ordinary", "tail"] and len(q["calibration_files"]) == 1
    assert manifest["inputs"][0]["name"] == "x"  # the export manifest carried over

    assert invoke("verify", out).exit_code == 0
    lint = invoke("lint-ops", out)
    assert lint.exit_code == 0, lint.output
    parity = run_cli("parity", SPEC, out, "--json", "-")
    assert parity.returncode == 0, parity.stderr
    pdata = json.loads(parity.stdout)
    assert pdata["settings"]["mode"] == "recheck" and pdata["passed"]
    assert {c["segment"] for c in pdata["candidates"][0]["evaluation"]["segments"]} == {"ordinary", "tail"}

    # the budgets travel with the artifact: changed data is refused, not silently re-judged
    np.savez(project / "tail.npz", x=np.zeros((3, 16), np.float32))
    changed = invoke("parity", SPEC, out)
    assert changed.exit_code == 2 and "changed since the model was approved" in changed.output


@pytest.mark.parametrize("args, message", [
    (["--budget", "agreement@0.5=97"], "is a fraction between 0 and 1"),
    (["--budget", "speed=2"], "unknown metric 'speed'"),
    (["--budget", "nosuch:cosine=0.9"], "names segment 'nosuch'"),
    (["--mode", "sometimes", "--budget", "cosine=0.9"], "unknown --mode"),
])
def test_usage_errors_exit_2_with_one_line_and_a_fix(project, args, message):
    result = invoke(*_args(project, "-o", project / "x.int8.onnx", *args))
    assert result.exit_code == 2, result.output
    assert message in result.output and "fix:" in result.output and "Traceback" not in result.output


def test_ci_quantize_stage_from_the_config(project, tmp_path):
    import shutil

    for name in ("cal.npz", "ordinary.npz"):
        shutil.copy(project / name, tmp_path / name)
    (tmp_path / "onnxtax.toml").write_text(textwrap.dedent(f"""
        exporter = "torchscript"
        output_dir = "build"
        [parity]
        providers = ["cpu"]
        [lint]
        source = false
        [models.scorer]
        spec = "{tiny.FILE}:Tiny"
        inputs = ["x:batch,16"]
        [models.scorer.quantize]
        mode = "static"
        calibration = ["cal.npz"]
        eval = {{ ordinary = "ordinary.npz" }}
        budgets = {{ "agreement@0.5" = 0.9, ordinary = {{ max_abs = 0.5 }} }}
        bench_batch_sizes = [1]
        bench_min_time = 0.02
        """))
    proc = run_cli("ci", "--config", tmp_path / "onnxtax.toml", "--json", "-", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    model = json.loads(proc.stdout)["models"][0]
    stage = model["stages"]["quantize"]
    assert stage["status"] == "passed" and stage["result"]["written"]
    assert (tmp_path / "build" / "scorer.int8.onnx").is_file()
    budgets = {(b["segment"], b["metric"]) for b in stage["result"]["budgets"]}
    assert budgets == {(None, "agreement@0.5"), ("ordinary", "max_abs")}

    (tmp_path / "onnxtax.toml").write_text((tmp_path / "onnxtax.toml").read_text().replace(
        'max_abs = 0.5', 'max_abs = 0.5, speed = 1'))
    bad = run_cli("ci", "--config", tmp_path / "onnxtax.toml", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown metric 'speed'" in bad.stderr
