"""check_parity on tiny real models: what passes, what fails and why, and the comparison itself."""

from __future__ import annotations

import json
import math
import re
import textwrap
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from onnxtax.core.errors import InputSpecError, OnnxtaxError, ProviderError
from onnxtax.core.compare import compare_arrays
from onnxtax.core.defaults import PARITY_ATOL as DEFAULT_ATOL
from onnxtax.core.defaults import PARITY_RTOL as DEFAULT_RTOL
from onnxtax.parity import SCHEMA, check_parity, parse_tolerances, plan_shapes
from onnxtax.parity.shapes import default_axis_values
from onnxtax.core.report import jsonable
from onnxtax.render.junit import junit_xml
from onnxtax.render.parity import parity_junit_suites, parity_markdown
from onnxtax.core.specs import parse_input_specs

MODELS = '''
import torch
import torch.nn.functional as F
from torch import nn


def _linear(i, o):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Linear(i, o)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x):
        return self.net(x)


class BakedBatch(nn.Module):
    """int(x.shape[0]) is a constant to the TorchScript tracer."""
    def __init__(self):
        super().__init__()
        self.l = _linear(16, 4)

    def forward(self, x):
        return self.l(x) + torch.arange(int(x.shape[0])).unsqueeze(1)


class MeanBranch(nn.Module):
    """The TorchScript tracer freezes the branch the example input took."""
    def __init__(self):
        super().__init__()
        self.l = _linear(16, 4)

    def forward(self, x):
        if x.mean() > 0:
            return self.l(x)
        return self.l(x) * 2 + 1


class Tokens(nn.Module):
    """Token ids must stay below the vocabulary size (50); returns logits and argmax ids."""
    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.embed = nn.Embedding(50, 8)
            self.head = nn.Linear(8, 50)

    def forward(self, ids):
        logits = self.head(self.embed(ids))
        return logits, logits.argmax(-1)


class DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = _linear(16, 4)

    def forward(self, x):
        h = self.l(x)
        return {"score": h.sum(-1), "parts": (torch.relu(h), h * 2)}


class DictOutExtra(DictOut):
    def forward(self, x):
        out = super().forward(x)
        out["extra"] = x.mean(-1)
        return out


class Noisy(MLP):
    def forward(self, x):
        return self.net(x) + 0.01 * torch.randn(x.shape[0], 4)


class NoisyWhenBatched(MLP):
    """Deterministic at batch 1, random above: the check at batch 1 alone would miss it."""

    def forward(self, x):
        noise = 0.01 * torch.randn(x.shape[0], 4) if x.shape[0] > 1 else 0.0
        return self.net(x) + noise


class WithDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = _linear(16, 4)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.l(x))
'''


def export_torchscript(model, path: Path, example: tuple, input_names: list[str], output_names: list[str],
                       dynamic_axes: dict) -> Path:
    """The TorchScript exporter: milliseconds, and it bakes sizes and freezes branches as users meet it."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, str(path), dynamo=False, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes, opset_version=17)
    return path


def build_models(root: Path) -> dict[str, Path]:
    """Write the model file and export each model once; returns name -> path (and 'file')."""
    import torch

    from onnxtax.core.loading import load_model

    src = root / "parity_models.py"
    src.write_text(textwrap.dedent(MODELS))
    batch = {0: "batch"}
    x = torch.ones(3, 16)  # positive mean: MeanBranch freezes its first branch
    plan = {
        "MLP": ((x,), ["x"], ["y"], {"x": batch}),
        "BakedBatch": ((x,), ["x"], ["y"], {"x": batch}),
        "MeanBranch": ((x,), ["x"], ["y"], {"x": batch}),
        "Tokens": ((torch.zeros(3, 5, dtype=torch.int64),), ["ids"], ["logits", "ids_out"],
                   {"ids": {0: "batch", 1: "seq"}}),
        "DictOut": ((x,), ["x"], ["score", "relu", "double"], {"x": batch}),
    }
    paths = {"file": src}
    for name, (example, ins, outs, axes) in plan.items():
        module = load_model(f"{src}:{name}").module
        paths[name] = export_torchscript(module, root / f"{name}.onnx", example, ins, outs, axes)
    return paths


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_models(tmp_path_factory.mktemp("parity_models"))


def spec(models, name: str) -> str:
    return f"{models['file']}:{name}"


# --------------------------------------------------------------------------- verdicts on real exports


@pytest.fixture(scope="module")
def dynamo_export(models, tmp_path_factory):
    """The way users get a model: `onnxtax export` (dynamo, manifest beside it)."""
    from onnxtax.export import export_model

    out = tmp_path_factory.mktemp("dynamo") / "mlp.onnx"
    result = export_model(spec(models, "MLP"), out, ["x:batch,16"])
    assert result.passed, result.error
    return out


def test_correct_export_passes_at_every_size(models, dynamo_export):
    report = check_parity(spec(models, "MLP"), dynamo_export)
    assert report and report.passed, report.failures
    assert report.input_source == "manifest"
    assert report.export_sizes == {"batch": 3}
    # 1, an even and an odd size, none of them the export-time 3
    assert [s.label for s in report.shapes] == ["batch=1", "batch=4", "batch=7"]
    assert [c.status for c in report.cases] == ["passed"] * 3
    for case in report.cases:
        assert case.stats.samples == 3 and case.stats.outside == 0
        assert case.stats.max_abs_diff < DEFAULT_ATOL and case.stats.cosine_min > 0.999999
    assert report.providers[0].placement.fallback_count == 0
    data = json.loads(json.dumps(jsonable(report.to_dict())))
    assert data["schema"] == SCHEMA and data["passed"] is True
    tolerance = data["tolerance"]
    assert {k: tolerance[k] for k in ("rtol", "atol", "atol_scaled_by", "min_cosine", "per_output")} == {
        "rtol": DEFAULT_RTOL, "atol": DEFAULT_ATOL, "atol_scaled_by": "rms", "min_cosine": 0.999, "per_output": {}}
    # the model's own noise, measured once at the largest shape, is in the report with the rule it sets
    assert tolerance["noise_measured_at"] == "batch=7" and tolerance["noise_samples"] == 3
    assert tolerance["noise_factor"] is None
    assert 0 < tolerance["noise"]["output"] < 1e-5 and tolerance["noise_note"] is None
    assert "k x noise" in tolerance["rule"]
    assert data["shapes"][2]["input_shapes"] == {"x": [7, 16]}
    assert data["providers"][0]["cases"][0]["worst"]["tolerance_ratio"] < 1


def test_initializer_changed_by_1e3_relative_fails(models, tmp_path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(models["MLP"]))
    init = next(i for i in model.graph.initializer if numpy_helper.to_array(i).ndim == 2)
    changed = numpy_helper.to_array(init) * np.float32(1 + 1e-3)
    init.CopyFrom(numpy_helper.from_array(changed, init.name))
    path = tmp_path / "changed.onnx"
    onnx.save(model, str(path))

    report = check_parity(spec(models, "MLP"), path)
    assert not report
    assert all(c.status == "failed" for c in report.cases)
    worst = max(c.stats.max_rel_diff for c in report.cases)
    assert 1e-4 < worst < 1e-1
    # the absolute part is atol times the output's RMS at that shape, said in the reason
    assert re.search(r"outside \|a-b\| <= [0-9.e+-]+ \+ 0\.0001\*\|b\| \(atol 1e-05 x output rms [0-9.]+\)",
                     report.failures[0]), report.failures[0]
    # a looser tolerance for that output lets it through
    assert check_parity(spec(models, "MLP"), path, tolerances={"y": (1e-2, 1e-3)})


def test_baked_batch_fails_at_other_sizes_with_the_reason(models):
    report = check_parity(spec(models, "BakedBatch"), models["BakedBatch"], dims={"batch": [1, 3, 7]})
    assert not report
    by_shape = {c.shape: c for c in report.cases}
    assert by_shape["batch=3"].passed  # the export-time size
    assert by_shape["batch=1"].status == "failed"
    assert "shape [3, 4], source [1, 4]" in by_shape["batch=1"].reason
    assert "baked into the graph at export" in by_shape["batch=1"].reason
    assert by_shape["batch=7"].status == "error"  # ORT cannot broadcast 3 against 7: reported, not raised
    assert "ONNX Runtime failed to run at batch=7" in by_shape["batch=7"].reason
    assert "(node /Add)" in by_shape["batch=7"].reason
    assert "passes at batch=3 but fails at batch=1, batch=7" in report.providers[0].reason


def test_frozen_branch_caught_with_default_samples(models):
    report = check_parity(spec(models, "MeanBranch"), models["MeanBranch"])
    assert not report
    assert report.samples_per_shape == 3
    failing = [c for c in report.cases if not c.passed]
    assert failing
    assert any("the difference depends on the input values" in c.reason for c in failing)
    assert not any("frozen" in c.reason for c in failing)  # a cause is named only with evidence (--localize)
    assert max(c.stats.max_abs_diff for c in failing) > 0.1


def test_int64_inputs_stay_in_range_and_int_outputs_match_exactly(models):
    ids = ["ids:batch,seq:int64"]
    report = check_parity(spec(models, "Tokens"), models["Tokens"], ids, ranges={"ids": (0, 50)})
    assert report, report.failures
    assert len(report.shapes) == 9  # 3 x 3 sizes: a full product under the cap
    assert report.inputs[0]["range"] == [0, 50]
    int_case = next(c for c in report.cases if c.output == "ids_out")
    assert (int_case.stats.rtol, int_case.stats.atol) == (0.0, 0.0)
    assert int_case.stats.cosine_min is None
    # ids beyond the vocabulary: the source model itself refuses, exit 2 with the fix
    with pytest.raises(InputSpecError, match="the source model raised IndexError") as err:
        check_parity(spec(models, "Tokens"), models["Tokens"], ids, ranges={"ids": (0, 60)})
    assert "--range" in err.value.hint
    with pytest.raises(InputSpecError, match="--range 'nope' names no input"):
        check_parity(spec(models, "Tokens"), models["Tokens"], ids, ranges={"nope": (0, 5)})


def test_graph_inputs_vary_axes_jointly(models):
    report = check_parity(spec(models, "Tokens"), models["Tokens"], dims={"batch": [1, 2], "seq": [3, 4, 5]})
    assert report.input_source == "onnx-graph"
    assert [s.label for s in report.shapes] == ["batch=1,seq=3", "batch=2,seq=4", "batch=1,seq=5"]


def test_dict_outputs_flattened_in_insertion_order(models):
    report = check_parity(spec(models, "DictOut"), models["DictOut"])
    assert report, report.failures
    assert [(o["name"], o["source_path"]) for o in report.outputs] == [
        ("score", "score"), ("relu", "parts.0"), ("double", "parts.1")]
    assert len(report.cases) == 3 * 3


def test_output_count_mismatch_is_a_failure_naming_both(models):
    report = check_parity(spec(models, "DictOutExtra"), models["DictOut"])
    assert not report
    assert report.failures[0].startswith("outputs: the source returns 4 tensors (score, parts.0, parts.1, extra)")
    assert "the ONNX model has 3 (score, relu, double)" in report.failures[0]


def test_non_deterministic_source_refused(models):
    with pytest.raises(OnnxtaxError, match="not deterministic") as err:
        check_parity(spec(models, "Noisy"), models["MLP"])
    assert err.value.exit_code == 2 and "dropout" in err.value.hint


def test_non_determinism_is_also_checked_at_the_largest_shape(models):
    with pytest.raises(OnnxtaxError, match="not deterministic") as err:
        check_parity(spec(models, "NoisyWhenBatched"), models["MLP"])
    assert "batch=7" in str(err.value) or "batch=4" in str(err.value)


def test_module_in_train_mode_checked_in_eval_and_restored(models, tmp_path):
    import torch

    from onnxtax.core.loading import load_model

    module = load_model(spec(models, "WithDropout")).module
    path = export_torchscript(module, tmp_path / "drop.onnx", (torch.ones(2, 16),), ["x"], ["y"], {"x": {0: "b"}})
    module.train()
    assert check_parity(module, path)
    assert module.training and module.drop.training


def test_unavailable_provider_is_exit_2_listing_available_or_skipped(models):
    with pytest.raises(ProviderError, match="CUDAExecutionProvider is not available") as err:
        check_parity(spec(models, "MLP"), models["MLP"], providers=["cuda"])
    assert "available: CPUExecutionProvider" in err.value.hint and err.value.exit_code == 2
    report = check_parity(spec(models, "MLP"), models["MLP"], providers=["cuda", "cpu"], skip_unavailable=True)
    assert report
    statuses = {p.request.short: (p.status, p.reason) for p in report.providers}
    assert statuses["cuda"] == ("skipped", "skipped: not available on this host")
    assert statuses["cpu"] == ("passed", None)
    nothing = check_parity(spec(models, "MLP"), models["MLP"], providers=["cuda"], skip_unavailable=True)
    assert not nothing and "nothing was compared" in nothing.failures[0]


def test_session_load_failure_is_a_failure_not_a_crash(models, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Mystery", ["x"], ["y"], domain="my.ops")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.ops", 1)])
    model.ir_version = 8
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    report = check_parity(spec(models, "MLP"), path)
    assert not report
    assert report.providers[0].status == "error"
    assert "session could not load" in report.providers[0].reason and "Mystery" in report.providers[0].reason
    root = ET.fromstring(junit_xml(parity_junit_suites(report)))
    assert root.get("errors") == "1"


def test_junit_counts_one_case_per_provider_shape_output(models):
    report = check_parity(spec(models, "DictOut"), models["DictOut"], providers=["cpu", "cuda"],
                          skip_unavailable=True)
    root = ET.fromstring(junit_xml(parity_junit_suites(report)))
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == ("10", "0", "0", "1")
    cpu = root.find("testsuite[@name='parity cpu']")
    names = [c.get("name") for c in cpu.findall("testcase")]
    assert names[:3] == ["batch=1 score", "batch=1 relu", "batch=1 double"] and len(names) == 9

    failing = check_parity(spec(models, "BakedBatch"), models["BakedBatch"], dims={"batch": [1, 3, 7]})
    root = ET.fromstring(junit_xml(parity_junit_suites(failing)))
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("3", "1", "1")
    failure = root.find(".//testcase[@name='batch=1 y']/failure")
    assert "shape [3, 4], source [1, 4]" in failure.get("message")
    markdown = parity_markdown(failing)
    assert "FAILED" in markdown and "| cpu | failed | 1/3 |" in markdown


def test_data_files_add_real_samples_and_are_checked(models, tmp_path):
    good = tmp_path / "prod.npz"
    np.savez(good, x=np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32), label=np.ones(5))
    report = check_parity(spec(models, "MLP"), models["MLP"], data_files=[good])
    assert report, report.failures
    data_shape = report.shapes[-1]
    assert (data_shape.label, data_shape.origin, data_shape.samples) == ("prod.npz(batch=5)", "data", 1)
    assert report.cases[-1].shape == "prod.npz(batch=5)" and report.cases[-1].stats.samples == 1

    cases = {
        "missing.npz": ({"other": np.zeros((2, 16), np.float32)}, "no array named 'x'"),
        "dtype.npz": ({"x": np.zeros((2, 16), np.float64)}, "'x' has dtype float64, the model input is float32"),
        "shape.npz": ({"x": np.zeros((2, 15), np.float32)}, "has 15 at axis 1 where the model input is fixed at 16"),
        "rank.npz": ({"x": np.zeros((16,), np.float32)}, "has shape [16]"),
    }
    for name, (arrays, words) in cases.items():
        path = tmp_path / name
        np.savez(path, **arrays)
        with pytest.raises(InputSpecError) as err:
            check_parity(spec(models, "MLP"), models["MLP"], data_files=[path])
        assert str(path) in err.value.message and words in err.value.message, err.value.message
    with pytest.raises(InputSpecError, match="file not found"):
        check_parity(spec(models, "MLP"), models["MLP"], data_files=[tmp_path / "absent.npz"])


def test_input_errors_are_usage_errors(models):
    with pytest.raises(InputSpecError, match="'x' is int64 but the ONNX graph takes float32"):
        check_parity(spec(models, "MLP"), models["MLP"], ["x:batch,16:int64"])
    with pytest.raises(InputSpecError, match="fixed at 16"):
        check_parity(spec(models, "MLP"), models["MLP"], ["x:batch,8"])
    with pytest.raises(InputSpecError, match="'nope', which is not an ONNX output"):
        check_parity(spec(models, "MLP"), models["MLP"], tolerances={"nope": (1e-3, 1e-3)})
    with pytest.raises(InputSpecError, match="names no dynamic axis"):
        check_parity(spec(models, "MLP"), models["MLP"], dims={"seq": [2]})


# --------------------------------------------------------------------------- the comparison


def test_compare_equal_nans_pass_nan_vs_number_fails():
    b = np.array([1.0, np.nan, 3.0, np.inf, -np.inf], np.float32)
    assert compare_arrays(b.copy(), b)
    a = b.copy()
    a[1] = 2.0
    stats = compare_arrays(a, b)
    assert not stats
    assert (stats.outside, stats.nan_inf_mismatch) == (1, 1)
    assert stats.worst.index == (1,) and math.isnan(stats.worst.source) and stats.worst.onnx == 2.0
    assert "NaN/Inf at different positions" in stats.failure_reason()
    a = b.copy()
    a[3] = -np.inf  # +inf vs -inf
    assert compare_arrays(a, b).nan_inf_mismatch == 1


def test_compare_worst_of_matching_infinities_has_no_nan_diff():
    """An output that is all +inf on both sides passes with a worst diff of 0, not NaN (inf - inf),
    so the JSON carries a number and numpy prints no warning."""
    b = np.full((2, 3), np.inf, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = compare_arrays(b.copy(), b)
    assert stats and stats.worst.abs_diff == 0.0 and stats.max_abs_diff == 0.0
    a = b.copy()
    a[1, 2] = np.nan
    worst = compare_arrays(a, b).worst
    assert worst.index == (1, 2) and worst.abs_diff == math.inf and worst.tolerance_ratio == math.inf


def test_tolerances_must_be_finite(models):
    """A NaN tolerance makes every `diff > bound` false: it must not turn the gate off."""
    for kwargs in ({"rtol": math.nan}, {"atol": math.inf}, {"tolerances": {"y": (math.nan, 0.0)}},
                   {"threads": -1}):
        with pytest.raises(InputSpecError):
            check_parity(spec(models, "MLP"), models["MLP"], samples=1, **kwargs)


def test_compare_tolerance_formula_and_worst_element():
    b = np.array([[0.0, 100.0], [1.0, -2.0]], np.float32)
    a = b + np.array([[0.9e-5, 0.0095], [0.0, 0.0]], np.float32)  # both within atol + rtol*|b|
    stats = compare_arrays(a, b)
    assert stats, stats.failure_reason()
    a[1, 1] = -2.01  # 0.01 > 1e-5 + 2e-4
    stats = compare_arrays(a, b)
    assert not stats and stats.outside == 1 and stats.worst.index == (1, 1)
    assert stats.outside_pct == 25.0
    assert stats.max_rel_diff == pytest.approx(0.005, rel=1e-3)
    assert stats.worst.tolerance_ratio > 1
    assert stats.cosine_min == pytest.approx(1.0, abs=1e-4)
    assert compare_arrays(-b, b).cosine_min == pytest.approx(-1.0)


def test_compare_shape_dtype_and_integers():
    b = np.arange(6, dtype=np.float32).reshape(2, 3)
    stats = compare_arrays(b.reshape(3, 2), b)
    assert not stats and stats.failure_reason() == "shape [3, 2], source [2, 3]"
    stats = compare_arrays(b.astype(np.float16), b)
    assert not stats and "dtype float16, source float32" in stats.failure_reason()
    ints = np.array([1, 2, 3], np.int64)
    assert compare_arrays(ints.copy(), ints, 0.0, 0.0)
    assert not compare_arrays(ints + np.array([0, 0, 1]), ints, 0.0, 0.0)
    assert compare_arrays(np.array([True]), np.array([True]), 0, 0)
    assert compare_arrays(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32))


def test_stats_stream_over_samples():
    from onnxtax.core.compare import OutputStats

    acc = OutputStats(DEFAULT_RTOL, DEFAULT_ATOL)
    b = np.ones(4, np.float32)
    assert acc.update(b, b, sample=0)
    assert not acc.update(b + 1, b, sample=1)
    assert acc.update(b, b, sample=2)
    assert (acc.samples, acc.failed_samples, acc.elements, acc.outside) == (3, 1, 12, 4)
    assert acc.worst.sample == 1
    assert "fails on 1 of 3 samples" in acc.failure_reason()


# --------------------------------------------------------------------------- shapes and flags


def test_default_axis_values_avoid_the_export_size():
    assert default_axis_values(3) == [1, 4, 7]
    assert default_axis_values(4) == [1, 6, 7]
    assert default_axis_values(7) == [1, 4, 9]
    assert default_axis_values(None) == [1, 4, 7]


def test_shape_plan_product_under_the_cap_joint_above():
    specs = parse_input_specs(["a:b1,b2,b3:float32"])
    assert len(plan_shapes(specs, None, {}, samples=1)) == 3  # 27 > 9: jointly
    assert len(plan_shapes(specs, None, {}, samples=1, max_shapes=27)) == 27
    two = plan_shapes(parse_input_specs(["x:batch,seq"]), {"batch": [2, 2, 8]}, {}, samples=2)
    assert [p.label for p in two][:3] == ["batch=2,seq=1", "batch=2,seq=4", "batch=2,seq=7"]
    assert len(two) == 6 and two[0].samples == 2
    assert [p.label for p in plan_shapes(parse_input_specs(["x:4"]), None, {}, samples=1)] == ["static"]


def test_parse_tolerances():
    assert parse_tolerances(["logits=1e-3:1e-4"]) == {"logits": (1e-3, 1e-4)}
    for bad in ("logits", "logits=1e-3", "=1:1", "x=-1:0", "x=a:b"):
        with pytest.raises(InputSpecError, match="--tolerance"):
            parse_tolerances([bad])
