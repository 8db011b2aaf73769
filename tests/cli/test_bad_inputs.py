"""Inputs a hostile but realistic user types: each is exit 2 with a one-line `error:` and a
`fix:`, never a traceback, and nothing is left half-done. Plus the forward() signatures
that used to be refused or misreported: `forward(*xs)` and keyword-only arguments."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from onnxtax.cli import app

MODELS = '''
import torch


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x)


class Varargs(torch.nn.Module):
    def forward(self, x, *rest):
        return x + sum(rest)


class Wider(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(x)


class KeywordOnly(torch.nn.Module):
    def forward(self, x, *, scale, shift=None):
        return x * scale + (0 if shift is None else shift)
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A model file, its export (with manifest), and bad files beside them."""
    from onnxtax.export import export_model

    root = tmp_path_factory.mktemp("bad-inputs")
    (root / "models.py").write_text(MODELS)
    assert export_model(f"{root / 'models.py'}:Linear", root / "m.onnx", ["x:batch,4"], exporter="torchscript")
    (root / "empty.onnx").write_bytes(b"")
    np.save(root / "one.npy", np.zeros((2, 4), np.float32))
    np.savez(root / "no-rows.npz", x=np.zeros((0, 4), np.float32))
    (root / "ci").mkdir()
    (root / "ci" / "models.py").write_text(MODELS)
    (root / "ci" / "onnxtax.toml").write_text(textwrap.dedent("""
        opset = 5
        [models.m]
        spec = "models.py:Linear"
        inputs = ["x:batch,4"]
        """))
    (root / "ci-ok").mkdir()
    (root / "ci-ok" / "models.py").write_text(MODELS)
    (root / "ci-ok" / "onnxtax.toml").write_text(textwrap.dedent("""
        exporter = "torchscript"
        output_dir = "onnx"
        [models.m]
        spec = "models.py:Linear"
        inputs = ["x:batch,4"]
        """))
    (root / "a-file").write_text("")
    return root


def invoke(root: Path, *args: str):
    result = CliRunner().invoke(app, [a.replace("{root}", str(root)) for a in args])
    return result.exit_code, result.output, result.exception, result.stdout


SPEC = "{root}/models.py:Linear"
BAD = [
    (["export", SPEC, "-o", "{root}/out/a.onnx", "--input", "x:batch,99999999999999"],
     "needs 2183 TiB per sample, more than half of this host's memory"),
    (["parity", SPEC, "{root}/m.onnx", "--range", "x=-inf:inf"], "--range 'x=-inf:inf' must be finite"),
    (["parity", SPEC, "{root}/m.onnx", "--range", "x=-1e308:1e308"], "must be finite"),
    (["parity", SPEC, "{root}/m.onnx", "--data", "{root}/one.npy"], "not an .npz archive"),
    (["parity", SPEC, "{root}/m.onnx", "--data", "{root}/no-rows.npz"], "'x' is empty (shape [0, 4])"),
    (["parity", SPEC, "{root}/empty.onnx"], "is not an ONNX model: the file is empty"),
    (["bench", SPEC, "{root}/empty.onnx", "--no-cold-start"], "is not an ONNX model: the file is empty"),
    (["lint-ops", "{root}/empty.onnx"], "is not an ONNX model: the file is empty"),
    (["ci", "--config", "{root}/ci/onnxtax.toml", "--reports", "{root}/ci/r"],
     "opset must be an opset between 7 and 26"),
    (["export", "{root}/models.py:KeywordOnly", "-o", "{root}/out/k.onnx", "--input", "x:batch,4"],
     "needs the keyword-only argument scale"),
    (["export", "{root}/one.npy:x", "-o", "{root}/out/n.onnx", "--input", "x:batch,4"],
     "is not a Python file Python can import"),
    (["bench", SPEC, "{root}/m.onnx", "--cold-start-runs", "0"], "--cold-start-runs 0: must be an integer >= 1"),
    (["report", "merge", "{root}/m.onnx"], "m.onnx is a file"),
    (["verify", "{root}"], "is a folder, not an .onnx file"),
    # outputs are checked before the work, not after it
    (["ci", "--config", "{root}/ci-ok/onnxtax.toml", "--reports", "{root}/a-file/r"],
     "cannot write --reports {root}/a-file/r: {root}/a-file is not a directory"),
    (["bench", SPEC, "{root}/m.onnx", "--json", "{root}/a-file/b.json"], "cannot write --json"),
    (["bench", SPEC, "{root}/m.onnx", "--plot", "{root}"], "cannot write --plot {root}: it is a directory"),
    (["bench", SPEC, "{root}/m.onnx", "--profile", "{root}/a-file"], "cannot write --profile {root}/a-file: it is a file"),
    (["lint-ops", "{root}/m.onnx", "--sarif", "{root}/a-file/x.sarif"], "cannot write --sarif"),
    (["parity", SPEC, "{root}/m.onnx", "--junit", "{root}/a-file/j.xml"], "cannot write --junit"),
    (["report", "merge", "{root}/ci", "-o", "{root}/a-file"], "cannot write --output {root}/a-file: it is a file"),
]


@pytest.mark.parametrize("args, words", BAD, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD])
def test_bad_input_is_exit_2_one_line(project, args, words):
    code, output, exc, _ = invoke(project, *args)
    assert code == 2, output
    text = " ".join(output.split())
    assert words.replace("{root}", str(project)) in text and "fix:" in text, output
    assert isinstance(exc, SystemExit) and "Traceback" not in output
    assert not (project / "out").exists() and not (project / "ci" / "r").exists()
    assert not (project / "ci-ok" / "onnx").exists()  # no model was exported before the refusal


def test_forward_with_varargs_exports_and_passes_parity(project, tmp_path):
    out = tmp_path / "v.onnx"
    code, output, _, stdout = invoke(project, "export", "{root}/models.py:Varargs", "-o", str(out), "--input", "x:batch,4",
                             "--input", "y:batch,4", "--json", "-")
    assert code == 0, output
    assert [i["name"] for i in json.loads(stdout)["inputs"]] == ["x", "y"]
    code, output, _, stdout = invoke(project, "parity", "{root}/models.py:Varargs", str(out), "--samples", "1")
    assert code == 0, output


def test_keyword_only_arguments_are_declared_by_name(project, tmp_path):
    out = tmp_path / "k.onnx"
    code, output, _, stdout = invoke(project, "export", "{root}/models.py:KeywordOnly", "-o", str(out), "--input",
                             "x:batch,4", "--input", "shift:batch,4", "--input", "scale:batch,4",
                             "--exporter", "torchscript", "--json", "-")
    assert code == 0, output
    assert [i["name"] for i in json.loads(stdout)["inputs"]] == ["x", "shift", "scale"]
    code, output, _, stdout = invoke(project, "parity", "{root}/models.py:KeywordOnly", str(out), "--samples", "1",
                             "--json", "-")
    assert code == 0, output
    assert json.loads(stdout)["model"]["class_name"] == "KeywordOnly"


def test_opset_conversion_names_the_op_the_converter_message_does_not(tmp_path):
    """onnx's converter says only "No Previous Version of LayerNormalization exists" (or less):
    the message names the op that blocks opset 9."""
    import onnx
    from onnx import helper

    from onnxtax.core import CheckFailed
    from onnxtax.export.graph import lock_opset as _lock_opset

    f = onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1)], "ln",
        [helper.make_tensor_value_info(n, f, s) for n, s in (("x", [2, 4]), ("g", [4]), ("b", [4]))],
        [helper.make_tensor_value_info("y", f, [2, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(CheckFailed, match="op LayerNormalization blocks the conversion"):
        _lock_opset(model, 9)


def test_paths_and_names_that_look_like_markup_are_printed_as_they_are(project, tmp_path):
    """`[/]` in a path or an output name once crashed the summary after the export was written."""
    out = tmp_path / "br[/]" / "m.onnx"
    code, output, exc, stdout = invoke(project, "export", SPEC, "-o", str(out), "--input", "x:batch,4",
                                       "--exporter", "torchscript", "--output-name", "[/]")
    assert code == 0, output
    assert f"exported {out}" in " ".join(stdout.split()) and "[/]" in stdout


def test_an_output_failing_at_the_end_is_exit_2_after_the_table(project, monkeypatch):
    """$GITHUB_STEP_SUMMARY on a full disk: the parity table is printed, then one error line."""
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", "/dev/full")
    code, output, _, stdout = invoke(project, "parity", SPEC, "{root}/m.onnx", "--samples", "1")
    assert code == 2, output
    assert "parity passed" in stdout
    assert "cannot write $GITHUB_STEP_SUMMARY /dev/full: No space left on device" in output


@pytest.mark.parametrize("manifest, words", [
    (b'{"artifact": {"file": "m.onnx", "sha256": 5}}', "is malformed: artifact needs a sha256 string"),
    (b'{"artifact": {"file": "m.onnx", "sha256": "ab", "external_data": [7]}}', "is malformed"),
    (b'{"artifact": null}', "is malformed"),
    (b"\xff\xfe", "is unreadable: 'utf-8' codec can't decode"),
])
def test_a_damaged_manifest_is_exit_2_naming_it(project, tmp_path, manifest, words):
    (tmp_path / "m.onnx").write_bytes((project / "m.onnx").read_bytes())
    (tmp_path / "m.manifest.json").write_bytes(manifest)
    code, output, exc, _ = invoke(project, "verify", str(tmp_path / "m.onnx"))
    assert code == 2 and words in " ".join(output.split()), output
    assert isinstance(exc, SystemExit)


def test_a_localisation_budget_that_is_not_positive_is_refused_before_the_run(cli):
    from tests.models import tiny

    proc = cli("parity", tiny.spec("Tiny"), "/nonexistent.onnx", "--localize-budget", "-1")
    assert proc.returncode == 2 and "--localize-budget -1" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", [["parity", "--samples", "1"], ["bench", "--no-cold-start", "--min-time", "0.01",
                                                                     "--batch-sizes", "1"]])
def test_a_model_that_rejects_the_artifacts_inputs_is_exit_2_in_every_stage(project, command):
    """Another model's artifact (Linear(4,2) exported, Linear(8,2) given): the eager model cannot take
    the inputs. Parity and bench agree: a usage error, before anything is measured."""
    name, *flags = command
    code, output, exc, _ = invoke(project, name, "{root}/models.py:Wider", "{root}/m.onnx", *flags)
    assert code == 2, output
    assert "error:" in output and "Traceback" not in output and "not measured" not in output


def test_a_missing_data_file_names_the_script_that_writes_it(tmp_path):
    """The example config on a fresh clone: its data comes from a script beside it."""
    (tmp_path / "models.py").write_text(MODELS)
    (tmp_path / "make_data.py").write_text("import numpy as np\nnp.savez('data/rows.npz', x=np.zeros((2, 4)))\n")
    (tmp_path / "onnxtax.toml").write_text(textwrap.dedent("""
        [models.m]
        spec = "models.py:Linear"
        inputs = ["x:batch,4"]
        data = ["data/rows.npz"]
        """))
    code, output, _, _ = invoke(tmp_path, "ci", "--config", "{root}/onnxtax.toml")
    assert code == 2 and "data file 'data/rows.npz' does not exist" in output
    assert "make_data.py writes it: run `python make_data.py`" in output
