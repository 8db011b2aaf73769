"""Export failures that lead somewhere: the branch's own line (also deep in a library), the full
traceback with --debug, a concrete way out for attention that does not decompose, step names."""

from __future__ import annotations

import json
import textwrap


LIBRARY = '''
import torch
from torch import nn


class Detector(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(8, 8)

    def forward(self, x):
        return self.postprocess(self.l(x))

    def postprocess(self, y):
        if y.max() > 0:
            return y * 2
        return y
'''

USER = '''
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "venv" / "site-packages"))
from torch import nn
from detlib import Detector


class Wrapped(nn.Module):
    def __init__(self):
        super().__init__()
        self.det = Detector()

    def forward(self, x):
        return self.det(x) + 1
'''


def test_a_guard_deep_in_library_code_names_the_librarys_branch_and_the_users_call(tmp_path, cli):
    lib = tmp_path / "venv" / "site-packages" / "detlib"
    lib.mkdir(parents=True)
    (lib / "__init__.py").write_text(LIBRARY)
    (tmp_path / "user_det.py").write_text(USER)
    proc = cli("export", "user_det.py:Wrapped", "-i", "x:batch,8", "-o", "det.onnx", "--debug", cwd=tmp_path)
    assert proc.returncode == 1
    assert (f"data-dependent control flow at {lib / '__init__.py'}:15 `if y.max() > 0:` (called from "
            f"{tmp_path / 'user_det.py'}:16)") in proc.stderr
    assert "Traceback (most recent call last)" in proc.stderr  # --debug: the full traceback
    assert "GuardOnDataDependentSymNode" in proc.stderr


def test_a_failed_step_is_named_never_an_exception_class():
    from torch.onnx._internal.exporter._errors import ConversionError

    from onnxtax.export.errors import explain_export_error as _explain_export_error

    try:
        try:
            raise ValueError("something inside a decomposition")
        except ValueError as inner:
            raise ConversionError("Failed to convert the exported program to an ONNX model") from inner
    except ConversionError as exc:
        problem, fix = _explain_export_error(exc, None)
    assert problem.startswith("the export failed while translating the captured graph to ONNX")
    assert "ValueError exporter step" not in problem and "--debug" in fix


def test_t5_attention_that_does_not_decompose_gets_the_ways_out(tmp_path, cli):
    # transformers comes with the `models` extra that `make test` installs: a missing one fails here
    import transformers  # noqa: F401
    (tmp_path / "t5.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn
        from transformers import T5Config, T5EncoderModel


        class T5Enc(nn.Module):
            def __init__(self):
                super().__init__()
                torch.manual_seed(0)
                cfg = T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
                self.enc = T5EncoderModel(cfg).eval()

            def forward(self, input_ids, attention_mask):
                return self.enc(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    '''))
    proc = cli("export", "t5.py:T5Enc", "-i", "input_ids:batch,seq:int64", "-i", "attention_mask:batch,seq:int64",
               "-o", "t5.onnx", cwd=tmp_path)
    assert proc.returncode == 1
    assert "could not decompose scaled-dot-product attention" in proc.stderr
    assert 'attn_implementation="eager"' in proc.stderr and "--exporter torchscript" in proc.stderr
    assert "exporter step failed" not in proc.stderr and "Traceback" not in proc.stderr


def test_lint_ops_source_runs_without_an_onnx_file(tmp_path, cli):
    """The data-dependent-branch message sends users to `lint-ops --source`; no .onnx exists then."""
    (tmp_path / "branchy.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn


        class Branchy(nn.Module):
            def __init__(self):
                super().__init__()
                self.l = nn.Linear(8, 8)

            def forward(self, x):
                if x.mean() > 0:
                    return self.l(x)
                return x
    '''))
    proc = cli("lint-ops", "--source", "branchy.py:Branchy", cwd=tmp_path)
    assert proc.returncode == 2 and "needs --source and --input" in proc.stderr
    proc = cli("lint-ops", "--source", "branchy.py:Branchy", "--input", "x:batch,8", "--json", "-", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    (finding,) = [f for f in data["findings"] if f["rule"] == "source-data-dependent-branch"]
    assert finding["source_location"].endswith("branchy.py:12")
    assert "only the source rules ran" in " ".join(data["notes"])


def test_a_python_loop_over_a_dynamic_axis_names_the_axis_not_a_cut_message():
    """torch.export's message ends its first line with ':' and names the dimension on the next; the
    explanation once stopped at the colon. The --input spec turns inputs['x'].shape[1] into its axis."""
    from torch.onnx._internal.exporter._errors import TorchExportError

    from onnxtax.core.specs import parse_input_specs
    from onnxtax.export.errors import explain_export_error as _explain_export_error

    conflict = ("Found the following conflicts between user-specified ranges and inferred ranges from model "
                "tracing:\n- Received user-specified dim hint Dim.DYNAMIC(min=None, max=None), but tracing "
                "inferred a static shape of 5 for dimension inputs['x'].shape[1].")
    try:
        try:
            raise ValueError(conflict)
        except ValueError as inner:
            raise TorchExportError("Failed to export the model with torch.export.") from inner
    except TorchExportError as exc:
        problem, fix = _explain_export_error(exc, None, None, parse_input_specs(["x:batch,seq"]))
    assert problem.startswith("torch.export could not keep the declared dynamic axes")
    assert problem.endswith(": the model fixes inputs['x'].shape[1] (axis seq) at its export size 5")
    assert "for i in range(x.shape[1])" in fix and "static in --input" in fix


def test_a_message_whose_first_line_introduces_a_list_keeps_the_list():
    from onnxtax.export.errors import explain_export_error as _explain_export_error

    try:
        raise RuntimeError("The exporter met these problems:\n- op foo.bar in `forward` of user_model.py\n\nmore")
    except RuntimeError as exc:
        problem, _ = _explain_export_error(exc, None)
    assert problem.endswith("The exporter met these problems: - op foo.bar in `forward` of user_model.py")
