"""One options object per stage: the command's flags, the library's keyword arguments and the ci
config's table all build it, with the same defaults, and it is validated in one place. A flag, a
field or a config key added to one of them and not the others fails here."""

from __future__ import annotations

import dataclasses
import inspect
import textwrap

import pytest

from onnxtax.bench import BenchOptions
from onnxtax.ci.config import KEY_ALIASES
from onnxtax.ci.schema import BENCH, LINT, MODEL, PARITY, QUANTIZE, RUNTIMES
from onnxtax.cli import bench, export, lint, parity, quantize, runtimes
from onnxtax.core.errors import ConfigError, OnnxtaxError
from onnxtax.export import ExportOptions
from onnxtax.lint import LintOptions
from onnxtax.parity import ParityOptions
from onnxtax.quantize import QuantizeOptions
from onnxtax.runtimes import RuntimesOptions

# option field -> the command's parameter, where their names differ (list flags are singular)
FLAG_OF = {"dims": "dim", "ranges": "range_", "data_files": "data", "tolerances": "tolerance", "providers": "provider",
           "localize_budget_s": "localize_budget", "localize_memory_mb": "localize_memory", "evals": "eval_",
           "budgets": "budget", "output_name": "metric_output", "versions": "ort", "profile_dir": "profile",
           "cold_start": "no_cold_start", "output_names": "output_name"}
# fields the library takes that no command can (Python objects, or what export passes on)
API_ONLY = {"custom_translation_table", "export_sizes"}

COMMANDS = [(parity.parity, ParityOptions), (bench.bench, BenchOptions), (quantize.quantize, QuantizeOptions),
            (runtimes.runtimes, RuntimesOptions), (export.export, ExportOptions), (lint.lint_ops, LintOptions)]


def fields_of(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def default_of(field: dataclasses.Field):
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


@pytest.mark.parametrize("command, options", COMMANDS, ids=[c.__name__ for c, _ in COMMANDS])
def test_every_option_has_a_flag_with_the_same_default(command, options):
    params = inspect.signature(command).parameters
    for name, field in fields_of(options).items():
        if name in API_ONLY:
            continue
        flag = FLAG_OF.get(name, name)
        assert flag in params, f"{options.__name__}.{name} has no flag on `onnxtax {command.__name__}`"
        cli_default = params[flag].default
        default = default_of(field)
        if flag == "no_cold_start":
            assert cli_default is (not default)
        elif isinstance(cli_default, (int, float, str, bool)) and not isinstance(default, (list, dict)):
            if name == "threads" and cli_default == 0:
                continue  # --threads 0 means each runtime's default: the option's None
            assert cli_default == default or (name == "bench_batch_sizes"), \
                f"--{flag}: {cli_default!r} on the command, {default!r} in {options.__name__}"


TABLES = [(ParityOptions, PARITY, "parity"), (BenchOptions, BENCH, "bench"), (QuantizeOptions, QUANTIZE, "quantize"),
          (RuntimesOptions, RUNTIMES, "runtimes"), (LintOptions, LINT, "lint"), (ExportOptions, MODEL, "model")]
# fields a table takes from elsewhere in the file: the model's own keys, or parity's table
FROM_ELSEWHERE = {
    "parity": set(),
    "bench": {"ranges", "seed", "skip_unavailable"},  # the model's ranges, parity's seed and skip_unavailable
    "quantize": {"providers"},  # parity's providers
    "runtimes": {"dims", "samples", "seed", "ranges", "data_files", "rtol", "atol", "tolerances", "min_cosine",
                 "noise_factor", "opt_level", "max_shapes"},  # compared with parity's shapes, samples and rule
    "lint": {"target_ort", "providers"},  # the model's target_ort, parity's providers
    "model": {"ranges", "data_files"},
}


@pytest.mark.parametrize("options, table, name", TABLES, ids=[t[2] for t in TABLES])
def test_the_config_reaches_every_option(options, table, name):
    aliases = {v: k for k, v in KEY_ALIASES.get(name, {}).items() if v}
    for field in fields_of(options):
        if field in API_ONLY or field in FROM_ELSEWHERE[name]:
            continue
        key = aliases.get(field, field)
        assert key in table.keys, f"{options.__name__}.{field} has no key in the config's [{name}] table"


def test_one_validation_for_the_command_the_library_and_the_config(tmp_path, cli):
    """--share-weights maybe: the same words from the three doors."""
    with pytest.raises(OnnxtaxError) as api:
        ParityOptions.build(share_weights="maybe")
    (tmp_path / "m.py").write_text("import torch\nclass M(torch.nn.Module):\n    def forward(self, x):\n"
                                   "        return x * 2\n")
    (tmp_path / "onnxtax.toml").write_text(textwrap.dedent("""
        [parity]
        share_weights = "always"
        threads = 0
        [models.m]
        spec = "m.py:M"
        inputs = ["x:batch,4"]
        """))
    from onnxtax.ci import load_config

    with pytest.raises(ConfigError) as config:
        load_config(tmp_path / "onnxtax.toml")
    assert "parity.threads" in config.value.message
    proc = cli("parity", f"{tmp_path / 'm.py'}:M", tmp_path / "m.onnx", "--share-weights", "maybe")
    assert proc.returncode == 2 and api.value.message in proc.stderr
    with pytest.raises(TypeError, match="no option sampels"):
        ParityOptions.build(sampels=3)
