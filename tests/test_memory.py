"""onnxtax.core.memory on the real process and real tiny models: the weights' size, each stage's
peak RSS, and the preflight that warns (or, opted in, stops) before a stage that will not fit.
The machine's limit is injected as a parameter (library) or with ONNXTAX_MEMORY_LIMIT (CLI)."""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from onnxtax.core import defaults

from onnxtax.core import memory
from onnxtax.cli import app
from onnxtax.core import OnnxtaxError
from tests.models.tiny import Tiny, spec

LINUX = sys.platform.startswith("linux")
TINY_BYTES = (16 * 8 + 8 + 8 * 1 + 1) * 4  # Linear(16, 8) + Linear(8, 1), float32


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    from onnxtax.export import export_model

    out = tmp_path_factory.mktemp("memory") / "tiny.onnx"
    result = export_model(spec("Tiny"), out, ["x:batch,16"], exporter="torchscript")
    assert result, result.error
    return out


def _matmul_model(path, external: bool) -> int:
    """y = x @ W + b with W 64x32 (8 KB) and b 32 floats; returns the weights' bytes."""
    w = numpy_helper.from_array(np.ones((64, 32), np.float32), "W")
    b = numpy_helper.from_array(np.ones(32, np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
              location=path.name + ".data", size_threshold=0)
    return (64 * 32 + 32) * 4


# --------------------------------------------------------------------------- weights


@pytest.mark.parametrize("external", [False, True])
def test_onnx_weights_are_read_from_the_headers_inline_or_external(tmp_path, external):
    path = tmp_path / "m.onnx"
    expected = _matmul_model(path, external)
    assert memory.onnx_weights_bytes(path) == expected
    assert memory.onnx_weights_bytes(tmp_path / "missing.onnx") is None


def test_module_weights_count_parameters_and_buffers_once():
    import torch

    assert memory.module_weights_bytes(Tiny()) == TINY_BYTES
    tied = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False))
    tied[1].weight = tied[0].weight  # one storage under two names
    tied.register_buffer("steps", torch.zeros(3, dtype=torch.int64))
    assert memory.module_weights_bytes(tied) == 10 * 4 * 4 + 3 * 8


# --------------------------------------------------------------------------- peak RSS


@pytest.mark.skipif(not LINUX, reason="VmHWM and clear_refs are Linux's; elsewhere the peak is the process's")
def test_each_stage_gets_its_own_peak_and_an_inner_stage_keeps_the_outer_peak():
    outer = memory.StageMeter("outer")
    block = bytearray(200 * 10**6)
    block[::4096] = b"x" * len(block[::4096])  # touch every page
    del block
    inner = memory.StageMeter("inner")  # resets VmHWM, as a stage inside a stage does
    inner_rec = inner.record()
    outer_rec = outer.record()
    assert outer_rec.peak_source == inner_rec.peak_source == "VmHWM since stage start"
    assert outer_rec.peak_rss_bytes - inner_rec.peak_rss_bytes > 150 * 10**6
    after = memory.StageMeter("after").record()
    assert after.peak_rss_bytes < outer_rec.peak_rss_bytes - 150 * 10**6


# --------------------------------------------------------------------------- preflight


def test_estimate_uses_the_measured_factor_and_says_what_lowers_it():
    gb = 10**9
    est = memory.estimate("parity", 28 * gb, "parity-unshared", available=(22 * gb, "test"), check="warn")
    assert est.need_bytes == int(28 * gb * defaults.MEMORY_FACTORS["parity-unshared"]) + defaults.MEMORY_BASE_BYTES
    assert est.fits is False
    assert est.warning.startswith("parity needs about 63.30 GB (2.25x the 28.00 GB of weights")
    assert "can have 22.00 GB (test): expect the run to be killed" in est.warning
    assert "--share-weights always" in est.advice
    shared = memory.estimate("parity", 28 * gb, "parity", available=(32 * gb, "test"), check="warn")
    assert shared.fits is True and shared.warning is None and shared.to_dict()["advice"] is None
    unknown = memory.estimate("lint-ops", gb, "lint", available=(None, "unknown"), check="warn")
    assert unknown.fits is None and unknown.warning is None


def test_check_warns_fails_or_stays_silent_as_asked():
    small = (10**6, "test")
    with pytest.warns(memory.MemoryWarning, match="export needs about .* can have 1 MB"):
        est = memory.StageMeter("export").check(10**9, "export", available=small, check="warn")
    assert est.fits is False
    with pytest.raises(memory.MemoryCheckError, match="needs about") as exc:
        memory.StageMeter("export").check(10**9, "export", available=small, check="fail")
    assert exc.value.exit_code == 2 and "ONNXTAX_MEMORY_CHECK=warn" in exc.value.hint
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert memory.StageMeter("export").check(10**9, "export", available=small, check="off") is None
        assert memory.StageMeter("export").check(10**3, "export", available=(10**12, "test"), check="fail").fits


def test_the_machine_and_the_environment_give_the_limit(monkeypatch):
    monkeypatch.delenv(memory.LIMIT_ENV, raising=False)
    avail, source = memory.available_memory()
    if LINUX:
        assert avail > memory.current_rss_bytes() > 0 and source.endswith("+ this process's RSS")
    monkeypatch.setenv(memory.LIMIT_ENV, "32GB")
    assert memory.available_memory() == (32 * 10**9, memory.LIMIT_ENV)
    sizes = [memory.parse_size(t) for t in ("512MB", "1.5e9", "2GiB", "100")]
    assert sizes == [512 * 10**6, 1_500_000_000, 2 * 2**30, 100]
    monkeypatch.setenv(memory.LIMIT_ENV, "lots")
    with pytest.raises(OnnxtaxError, match="is not a size"):
        memory.available_memory()
    monkeypatch.setenv(memory.CHECK_ENV, "maybe")
    with pytest.raises(OnnxtaxError, match="not a memory check mode"):
        memory.check_mode()


# --------------------------------------------------------------------------- the stages' reports


def test_parity_and_lint_reports_record_weights_peak_and_preflight(tiny_onnx):
    from onnxtax.lint import lint_model
    from onnxtax.parity import check_parity

    report = check_parity(spec("Tiny"), tiny_onnx, providers=["cpu"], samples=1)
    mem = report.to_dict()["memory"]
    assert mem["weights_bytes"] == TINY_BYTES and mem["peak_rss_bytes"] > 0
    assert mem["preflight"]["kind"] == "parity-unshared"  # auto shares from 256 MB only
    assert report.memory.line() == f"peak memory {memory.format_bytes(mem['peak_rss_bytes'])} (weights 580 B)"
    shared = check_parity(spec("Tiny"), tiny_onnx, providers=["cpu"], samples=1, share_weights="always")
    assert shared.to_dict()["memory"]["preflight"]["kind"] == "parity"
    lint = lint_model(tiny_onnx).to_dict()["memory"]
    assert lint["weights_bytes"] == TINY_BYTES and lint["preflight"]["kind"] == "lint"
    assert lint["preflight"]["fits"] is True  # this machine has more than 0.3 GB


def test_the_ratio_line_for_real_weights():
    rec = memory.MemoryRecord(2_680_000_000, 2_950_000_000, "VmHWM since stage start")
    assert rec.line() == "peak memory 2.95 GB (1.10x the 2.68 GB of weights)"
    assert rec.to_dict()["peak_over_weights"] == 1.101


# --------------------------------------------------------------------------- the CLI


def invoke(*args, env: dict | None = None):
    return CliRunner().invoke(app, list(map(str, args)), catch_exceptions=False,
                              env={"COLUMNS": "200", "GITHUB_STEP_SUMMARY": None, memory.CHECK_ENV: None,
                                   memory.LIMIT_ENV: None, **(env or {})})


def test_cli_warns_before_the_work_and_prints_the_peak_after(tiny_onnx):
    res = invoke("parity", spec("Tiny"), tiny_onnx, "-p", "cpu", "--samples", "1",
                 env={memory.LIMIT_ENV: "1MB"})
    assert res.exit_code == 0, res.output
    assert "warning: parity needs about 300 MB (2.25x the 580 B of weights + 300 MB); this process can have 1 MB " \
           f"({memory.LIMIT_ENV}): expect the run to be killed" in res.stderr
    assert "fix: --share-weights always" in res.stderr
    assert "parity passed" in res.stdout
    assert res.stdout.strip().splitlines()[-1].startswith("peak memory ") and "(weights 580 B)" in res.stdout


def test_cli_memory_check_fail_is_a_usage_error_before_the_work(tiny_onnx, tmp_path):
    res = invoke("parity", spec("Tiny"), tiny_onnx, "-p", "cpu", "--json", tmp_path / "r.json",
                 env={memory.LIMIT_ENV: "1MB", memory.CHECK_ENV: "fail"})
    assert res.exit_code == 2
    assert "error: parity needs about 300 MB" in res.stderr and "ONNXTAX_MEMORY_CHECK=warn" in res.stderr
    assert not (tmp_path / "r.json").exists() and "parity passed" not in res.stdout


def test_cli_json_and_verify_carry_the_memory(tiny_onnx):
    res = invoke("lint-ops", tiny_onnx, "--json", "-")
    assert res.exit_code == 0, res.output
    mem = json.loads(res.stdout)["memory"]
    assert mem["weights_bytes"] == TINY_BYTES and mem["peak_source"] in ("VmHWM since stage start",
                                                                        "ru_maxrss since process start")
    res = invoke("verify", tiny_onnx)
    assert res.exit_code == 0, res.output
    assert "peak memory " in res.stdout and "(weights 580 B)" in res.stdout


def test_export_estimates_with_the_external_data_factor_when_it_writes_external_data(tiny_onnx, tmp_path):
    from onnxtax.export import export_model

    inline = export_model(spec("Tiny"), tmp_path / "a.onnx", ["x:batch,16"], exporter="torchscript")
    external = export_model(spec("Tiny"), tmp_path / "b.onnx", ["x:batch,16"], exporter="torchscript",
                            external_data="always")
    assert inline.to_dict()["memory"]["preflight"]["kind"] == "export"
    assert external.to_dict()["memory"]["preflight"]["kind"] == "export-external"
    assert (external.to_dict()["memory"]["preflight"]["factor"]
            < inline.to_dict()["memory"]["preflight"]["factor"])
