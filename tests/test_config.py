"""Config loading: what a typo or a wrong type in onnxtax.toml looks like to the user
(file, line, key path, "did you mean"), defaults and overrides, path resolution."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from onnxtax.cli import app
from onnxtax.ci.config import find_config, load_config
from onnxtax.core import ConfigError

MODEL_SRC = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x):
        return self.lin(x)
"""


@pytest.fixture
def project(tmp_path):
    """A folder with a model file; `write(toml)` writes onnxtax.toml there and returns its path."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "net.py").write_text(MODEL_SRC)

    def write(text: str, name: str = "onnxtax.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return write


GOOD = """
    opset = 17
    output_dir = "out"

    [parity]
    samples = 2
    rtol = 1e-3
    providers = ["cpu"]

    [lint]
    fail_on = "warning"

    [models.net]
    spec = "models/net.py:Net"
    inputs = ["x:batch,4"]

    [models.net.parity]
    dims = { batch = [1, 9] }
    atol = 1e-6
    tolerances = { output = { rtol = 1e-2 } }

    [models.other]
    spec = "models/net.py:Net"
    inputs = ["x:batch,4"]
    output = "elsewhere/other.onnx"
    opset = 18
    exporter = "torchscript"
    bench = { batch_sizes = [1, 4], max_latency_ms = { "p99@1" = 5.0 }, min_speedup = 1.5 }

    [models.other.parity]
    samples = 1
    dims = { batch = 3 }
"""


def test_valid_config_merges_defaults_and_resolves_paths_against_its_folder(project, tmp_path, monkeypatch):
    path = project(GOOD)
    monkeypatch.chdir("/")  # the working directory must not matter
    cfg = load_config(path)
    assert list(cfg.models) == ["net", "other"]
    net, other = cfg.models["net"], cfg.models["other"]
    assert net.spec == f"{tmp_path / 'models' / 'net.py'}:Net"
    assert net.output == tmp_path / "out" / "net.onnx"
    assert other.output == tmp_path / "elsewhere" / "other.onnx"
    assert (net.export.opset, other.export.opset, net.export.exporter, other.export.exporter) == (
        17, 18, "dynamo", "torchscript")
    # [parity] defaults merged key by key under each model's table
    assert (net.parity.samples, net.parity.rtol, net.parity.atol) == (2, 1e-3, 1e-6)
    assert net.parity.dims == {"batch": [1, 9]} and other.parity.dims == {"batch": [3]}
    assert other.parity.samples == 1 and other.parity.providers == ["cpu"]
    assert net.parity.tolerances == {"output": (1e-2, 1e-6)}  # an output's own rtol over the model's atol
    assert net.lint.fail_on == "warning" and net.lint_source is True
    # bench is off unless configured
    assert net.bench is None
    assert other.bench.batch_sizes == [1, 4] and other.bench.max_latency_ms == {"p99@1": 5.0}
    assert other.bench.min_speedup == 1.5 and other.bench.cold_start is False
    assert cfg.reports == tmp_path / "onnxtax-reports"
    assert [m.name for m in cfg.select(["other", "net"])] == ["net", "other"]  # file order


def test_global_bench_applies_to_every_model_unless_turned_off(project):
    cfg = load_config(project("""
        [bench]
        batch_sizes = [1]
        [models.a]
        spec = "models/net.py:Net"
        inputs = ["x:batch,4"]
        [models.b]
        spec = "models/net.py:Net"
        inputs = ["x:batch,4"]
        bench = false
    """))
    assert cfg.models["a"].bench is not None and cfg.models["a"].bench.batch_sizes == [1]
    assert cfg.models["b"].bench is None


def error_of(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


def test_unknown_key_names_file_line_key_path_and_suggests(project):
    path = project(GOOD.replace("    samples = 2\n", "    sampels = 2\n"))
    err = error_of(path)
    assert err.message.startswith(f"{path}:5: parity.sampels: unknown key 'sampels'")
    assert err.hint == "did you mean 'samples'?"


def test_unknown_key_inside_inline_table_and_model_table(project):
    err = error_of(project(GOOD.replace("tolerances = { output = { rtol = 1e-2 } }",
                                        "tolerances = { output = { rtl = 1e-2 } }")))
    assert ":19: models.net.parity.tolerances.output.rtl: unknown key 'rtl'" in err.message
    assert err.hint == "did you mean 'rtol'?"
    err = error_of(project(GOOD.replace('    exporter = "torchscript"', '    exproter = "torchscript"')))
    assert ":26: models.other.exproter: unknown key" in err.message and err.hint == "did you mean 'exporter'?"


def test_wrong_type_names_expected_and_actual(project):
    err = error_of(project(GOOD.replace("opset = 17", 'opset = "17"')))
    assert err.message.endswith(":1: opset must be an opset between 7 and 26, not the string '17'")
    err = error_of(project(GOOD.replace("opset = 17", "opset = 5")))  # with the rest of the config, not at export
    assert err.message.endswith(":1: opset must be an opset between 7 and 26, not int 5")
    err = error_of(project(GOOD.replace("dims = { batch = [1, 9] }", 'dims = { batch = [1, "9"] }')))
    assert ":17: models.net.parity.dims.batch must be a positive integer or a list of them" in err.message
    err = error_of(project(GOOD.replace('fail_on = "warning"', 'fail_on = "warn"')))
    assert 'lint.fail_on must be "error" or "warning" or "info"' in err.message


def test_missing_spec_file_and_missing_required_key(project, tmp_path):
    err = error_of(project(GOOD.replace('spec = "models/net.py:Net"\n    inputs = ["x:batch,4"]\n\n    [models.net',
                                        'spec = "models/nett.py:Net"\n    inputs = ["x:batch,4"]\n\n    [models.net')))
    assert "models.net.spec: model file 'models/nett.py' does not exist" in err.message
    assert str(tmp_path / "models" / "nett.py") in err.message
    err = error_of(project("""
        [models.net]
        spec = "models/net.py:Net"
    """))
    assert "models.net: missing required key 'inputs'" in err.message and ":1:" in err.message


def test_values_checked_against_the_model_inputs(project):
    err = error_of(project(GOOD.replace("dims = { batch = [1, 9] }", "dims = { bacth = [1, 9] }")))
    assert "models.net.parity.dims.bacth: 'bacth' names no dynamic axis" in err.message
    assert err.hint == "did you mean 'batch'?"
    err = error_of(project(GOOD.replace('inputs = ["x:batch,4"]\n\n    [models.net.parity]',
                                        'inputs = ["x:batch,4:flaot"]\n\n    [models.net.parity]')))
    assert "models.net.inputs: unknown dtype 'flaot'" in err.message
    err = error_of(project(GOOD.replace('providers = ["cpu"]', 'providers = ["openvinoo"]')))
    assert "parity.providers: unknown execution provider 'openvinoo'" in err.message
    assert err.hint == "did you mean 'openvino'?"
    err = error_of(project(GOOD.replace('fail_on = "warning"', 'allow = ["float46"]')))
    assert "lint.allow" in err.message and "did you mean 'float64'" in err.hint
    err = error_of(project(GOOD.replace('max_latency_ms = { "p99@1" = 5.0 }', 'max_latency_ms = { p98 = 5.0 }')))
    assert "models.other.bench.max_latency_ms.p98: 'p98' is not a latency gate" in err.message


def test_model_names_must_make_report_file_names(project):
    err = error_of(project(GOOD.replace("[models.other]", "[models.host]").replace("[models.other.parity]",
                                                                                 "[models.host.parity]")))
    assert "model name 'host' cannot name a report file" in err.message


def test_only_with_unknown_name_suggests(project):
    cfg = load_config(project(GOOD))
    with pytest.raises(ConfigError) as info:
        cfg.select(["nett"])
    assert info.value.hint == "did you mean 'net'?"


def test_pyproject_tool_table_found_from_a_subfolder(project, tmp_path):
    project("""
        [project]
        name = "demo"

        [tool.onnxtax]
        opset = 17

        [tool.onnxtax.models.net]
        spec = "models/net.py:Net"
        inputs = ["x:batch,4"]
        output_dir = "x"
    """, name="pyproject.toml")
    sub = tmp_path / "src" / "deep"
    sub.mkdir(parents=True)
    assert find_config(sub) == (tmp_path / "pyproject.toml", "tool.onnxtax")
    err = error_of(tmp_path / "pyproject.toml")
    # key paths are shown as written in the file, with the tool.onnxtax prefix and its line
    assert err.message == (f"{tmp_path / 'pyproject.toml'}:10: tool.onnxtax.models.net.output_dir: "
                           f"unknown key 'output_dir'")
    assert err.hint == "did you mean 'output'?"


def test_onnxtax_toml_wins_over_pyproject_in_the_same_folder_and_none_found(project, tmp_path):
    project("[tool.other]\nx = 1\n", name="pyproject.toml")
    with pytest.raises(ConfigError) as info:
        find_config(tmp_path)
    assert "no onnxtax.toml" in info.value.message
    project(GOOD)
    assert find_config(tmp_path) == (tmp_path / "onnxtax.toml", "")


def test_invalid_toml_and_no_models(project):
    err = error_of(project("opset = \n"))
    assert "not valid TOML" in err.message
    err = error_of(project("opset = 18\n"))
    assert "models: no models defined" in err.message


def test_cli_reports_config_errors_with_exit_2_and_the_fix(project):
    path = project(GOOD.replace("    samples = 2\n", "    sampels = 2\n"))
    result = CliRunner().invoke(app, ["ci", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert "parity.sampels: unknown key 'sampels'" in result.output
    assert "fix: did you mean 'samples'?" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(app, ["ci", "--config", str(path.parent / "missing.toml")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_a_key_of_a_sub_table_written_in_the_model_table_points_at_that_table(project):
    err = error_of(project(GOOD.replace('    exporter = "torchscript"', "    samples = 2")))
    assert ":26: models.other.samples: unknown key 'samples'" in err.message
    assert err.hint == "did you mean 'parity.samples'? `samples = ...` goes in [models.other.parity]"
    err = error_of(project(GOOD.replace('    exporter = "torchscript"', "    threads = 2")))
    assert err.hint.startswith("did you mean 'parity.threads' or 'bench.threads' or 'serve.threads'?")
    err = error_of(project(GOOD.replace("opset = 17", "batch_size = [1]")))  # top level, and misspelt
    assert err.hint == "did you mean 'bench.batch_sizes'? `batch_sizes = ...` goes in [bench]"
    err = error_of(project(GOOD.replace('    exporter = "torchscript"', '    ouput = "x.onnx"')))
    assert err.hint == "did you mean 'output'?"  # a close key of the table itself comes first


def test_a_broken_pyproject_with_our_table_is_reported_not_skipped_for_a_config_above(project, tmp_path):
    project(GOOD)  # a valid onnxtax.toml in the parent folder must not be picked instead
    sub = tmp_path / "app"
    sub.mkdir()
    (sub / "pyproject.toml").write_text('[tool.onnxtax]\nopset = 17\n[tool.onnxtax]\nopset = 18\n')
    assert find_config(sub) == (sub / "pyproject.toml", "tool.onnxtax")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(start=sub)


def test_an_unknown_table_header_is_placed_on_its_line(project):
    err = error_of(project(GOOD.replace("[models.other]", "[model.other]").replace(
        "[models.other.parity]", "[model.other.parity]")))
    assert err.message.endswith(":21: model: unknown key 'model'") and err.hint == "did you mean 'models'?"
