"""Inputs a hostile user gives: another model than the artifact's, a model that keeps state, data
with NaN or inf, files of the wrong kind, folders named like files, non-ASCII names and spaces,
and a bad number for every numeric flag of every command. Each is exit 2 with one `error:` line
that names what is wrong (the flag, the file, the key, the rows), a `fix:`, no traceback, and no
file changed or left behind. In process, on one shared export."""

from __future__ import annotations

import json
import re

import pytest

from tests.models.hostile import HOLES, ROWS, make_project, run, snapshot

SPEC = "{root}/models.py:MLP"
MODEL = "{root}/m.onnx"
EVAL = "{root}/data/eval.npz"
BUDGET = ["--budget", "agreement@0.5=0.9"]
RUNTIMES = ["--ort", "1.20.1", "--offline", "--cache-dir", "{root}/no-cache"]  # never built: refused before


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("inputs"), running=True)


def fill(args, root) -> list[str]:
    return [str(a).replace("{root}", str(root)) for a in args]


def refused(root, args, *words: str, extra=()) -> str:
    """Run, assert exit 2 with one `error:` line holding every word (and a `fix:`), no traceback, and
    nothing under the project (and `extra` folders) changed; return the error line."""
    before = snapshot(root, *extra)
    proc = run(*fill(args, root))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(errors) == 1, proc.stderr
    line = errors[0]
    assert all(w.replace("{root}", str(root)) in line for w in words), proc.stderr
    assert "fix:" in proc.stderr and "Traceback" not in proc.stderr
    assert snapshot(root, *extra) == before
    return line


# --------------------------------------------------------------------------- the SPEC is the artifact's model

WRONG_MODEL = {
    "bench": ["bench", "{root}/models.py:BNNet", MODEL, "--no-cold-start", "--json", "{root}/out/b.json"],
    "quantize": ["quantize", "{root}/models.py:BNNet", MODEL, "-o", "{root}/out/q.onnx", "--eval", EVAL, *BUDGET],
    "parity": ["parity", "{root}/models.py:BNNet", MODEL, "--junit", "{root}/out/j.xml"],
    "runtimes": ["runtimes", MODEL, "{root}/models.py:BNNet", *RUNTIMES],
}


@pytest.mark.parametrize("command", WRONG_MODEL)
def test_another_model_than_the_artifacts_is_refused_naming_what_differs(root, command):
    """`bench M.py:BNNet mlp.onnx` once measured a 3-output model against the file exported from MLP."""
    refused(root, WRONG_MODEL[command], "models.py:BNNet is not the model m.onnx was exported from",
            "models.py:MLP)", "class BNNet here, MLP there", "'lin.weight' [4, 4] is not in the artifact's model")


@pytest.mark.parametrize("command", ["bench", "quantize", "runtimes"])
def test_a_file_onnxtax_did_not_write_is_checked_by_its_outputs(root, command):
    """No manifest to tell the model by: the graph's one output against the SPEC's three."""
    args = [a.replace(MODEL, "{root}/bare/m.onnx") for a in WRONG_MODEL[command]]
    refused(root, args, "models.py:BNNet returns 3 tensor(s), m.onnx has 1 output(s) (output)")


def test_parity_reports_a_foreign_artifacts_outputs_as_a_failed_check(root):
    """Parity's own check (exit 1, not a usage error): the outputs cannot be matched."""
    proc = run(*fill(["parity", "{root}/models.py:BNNet", "{root}/bare/m.onnx", "--samples", "1"], root))
    assert proc.returncode == 1, proc.stderr
    assert "the source returns 3 tensors" in proc.stdout and "the ONNX model has 1 (output)" in proc.stdout


# --------------------------------------------------------------------------- models that keep state

def test_a_forward_that_updates_a_buffer_is_refused_by_export_naming_it(root, tmp_path):
    line = refused(root, ["export", "{root}/models.py:Running", "-o", tmp_path / "r.onnx", "--input", "x:batch,4",
                          "--exporter", "torchscript"], "forward writes buffer `running`",
                   "answers the same inputs differently", extra=[tmp_path])
    assert "frozen" not in line and list(tmp_path.iterdir()) == []


def test_parity_refuses_a_stateful_forward_of_the_artifacts_class(root):
    """running.onnx is the stateless `Running` exported; the SPEC's `Running` updates the buffer."""
    line = refused(root, ["parity", "{root}/models.py:Running", "{root}/running.onnx", "--json", "{root}/out/p.json"],
                   "forward writes buffer `running`")
    assert "frozen" not in line


def test_a_forward_that_writes_its_weight_unchanged_exports(root, tmp_path):
    proc = run(*fill(["export", "{root}/models.py:Rewrites", "-o", tmp_path / "w.onnx", "--input", "x:batch,4",
                      "--exporter", "torchscript"], root))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "w.onnx").is_file()


# --------------------------------------------------------------------------- NaN and inf

ALL_ROWS = f"in {ROWS} of {ROWS} rows (0, 1, 2, 3, 4, 5, 6, 7, ...)"
SOME_ROWS = f"in 2 of {ROWS} rows ({HOLES[0]}, {HOLES[1]})"
NON_FINITE = {
    "quantize --eval all NaN": (["quantize", SPEC, MODEL, "-o", "{root}/out/q.onnx", "--eval", "{root}/data/nan.npz",
                                 *BUDGET], "--eval {root}/data/nan.npz: 'x' has NaN or inf " + ALL_ROWS),
    "quantize --eval segment": (["quantize", SPEC, MODEL, "-o", "{root}/out/q.onnx", "--eval", "ok=" + EVAL,
                                 "--eval", "tail={root}/data/holes.npz", *BUDGET],
                                "--eval {root}/data/holes.npz: 'x' has NaN or inf " + SOME_ROWS),
    "quantize --calibration": (["quantize", SPEC, MODEL, "-o", "{root}/out/q.onnx", "--eval", EVAL, "--mode", "static",
                                "--calibration", "{root}/data/holes.npz", *BUDGET],
                               "--calibration {root}/data/holes.npz: 'x' has NaN or inf " + SOME_ROWS),
    "parity --data": (["parity", SPEC, MODEL, "--data", "{root}/data/holes.npz", "--json", "{root}/out/p.json"],
                      "--data {root}/data/holes.npz: 'x' has NaN or inf " + SOME_ROWS),
    "export --data": (["export", SPEC, "-o", "{root}/out/e.onnx", "--input", "x:batch,4", "--exporter", "torchscript",
                       "--data", "{root}/data/nan.npz"], "--data {root}/data/nan.npz: 'x' has NaN or inf " + ALL_ROWS),
    "runtimes --data": (["runtimes", MODEL, SPEC, *RUNTIMES, "--data", "{root}/data/holes.npz"],
                        "--data {root}/data/holes.npz: 'x' has NaN or inf " + SOME_ROWS),
}


@pytest.mark.parametrize("case", NON_FINITE)
def test_non_finite_rows_are_refused_naming_file_key_and_rows(root, case):
    """An --eval segment of 20 NaN rows once passed agreement@0.5 at 100% and the INT8 model was written."""
    args, words = NON_FINITE[case]
    refused(root, args, words)


# --------------------------------------------------------------------------- files of the wrong kind, folders

KINDS = {
    "--data text": (["parity", SPEC, MODEL, "--data", "{root}/notes.txt"], "--data {root}/notes.txt is a text file"),
    "--data onnx": (["parity", SPEC, MODEL, "--data", MODEL], "--data {root}/m.onnx is an ONNX model"),
    "--data manifest": (["parity", SPEC, MODEL, "--data", "{root}/m.manifest.json"], "is an onnxtax manifest"),
    "--data npy": (["parity", SPEC, MODEL, "--data", "{root}/data/one.npy"], "not an .npz archive"),
    "--data folder": (["parity", SPEC, MODEL, "--data", "{root}/folder.npz"],
                      "--data {root}/folder.npz is a folder, not an .npz file"),
    "--eval text": (["quantize", SPEC, MODEL, "-o", "{root}/out/q.onnx", "--eval", "{root}/notes.txt", *BUDGET],
                    "--eval {root}/notes.txt is a text file, not an .npz archive of arrays"),
    "--eval folder": (["quantize", SPEC, MODEL, "-o", "{root}/out/q.onnx", "--eval", "{root}/folder.npz", *BUDGET],
                      "--eval {root}/folder.npz is a folder"),
    "--calibration model": (["quantize", SPEC, MODEL, "-o", "{root}/out/q.onnx", "--eval", EVAL, "--mode", "static",
                             "--calibration", MODEL, *BUDGET], "--calibration {root}/m.onnx is an ONNX model"),
    "parity data as model": (["parity", SPEC, EVAL], "'{root}/data/eval.npz' is an .npz archive of arrays, not an "
                                                     "ONNX model"),
    "bench manifest as model": (["bench", SPEC, "{root}/m.manifest.json"],
                                "'{root}/m.manifest.json' is the manifest of m.onnx, not an ONNX model"),
    "lint-ops text as model": (["lint-ops", "{root}/notes.txt"],
                               "'{root}/notes.txt' is a text file, not an ONNX model"),
    "parity folder as model": (["parity", SPEC, "{root}/folder.onnx"], "'{root}/folder.onnx' is a folder"),
    "quantize folder as -o": (["quantize", SPEC, MODEL, "-o", "{root}/folder.onnx", "--eval", EVAL, *BUDGET],
                              "cannot write -o {root}/folder.onnx: it is a directory"),
    "verify npz": (["verify", EVAL], "'{root}/data/eval.npz' is an .npz archive of arrays, not an ONNX model"),
    "verify manifest": (["verify", "{root}/m.manifest.json"], "is the manifest of m.onnx, not an ONNX model"),
    "verify script": (["verify", "{root}/models.py"], "'{root}/models.py' is a Python file"),
    "verify folder": (["verify", "{root}/folder.onnx"], "{root}/folder.onnx is a folder, not an .onnx file"),
    "spec npz": (["parity", "{root}/data/eval.npz:MLP", MODEL], "is not a Python file"),
    "spec folder": (["parity", "{root}/folder.npz:MLP", MODEL], "model file '{root}/folder.npz' is a folder"),
    "ci config folder": (["ci", "--config", "{root}/folder.onnx"], "--config {root}/folder.onnx is a folder"),
    "merge a file": (["report", "merge", EVAL], "report folder {root}/data/eval.npz is a file"),
}


@pytest.mark.parametrize("case", KINDS)
def test_a_file_of_the_wrong_kind_is_named_for_what_it_is(root, case):
    args, words = KINDS[case]
    line = refused(root, args, words)
    assert "allow_pickle" not in line and "wire type" not in line and "not found" not in line


def test_verify_of_a_manifest_names_the_model_beside_it(root):
    proc = run("verify", str(root / "m.manifest.json"))
    assert f"fix: give the model it describes: {root / 'm.onnx'}" in proc.stderr


# --------------------------------------------------------------------------- non-ASCII names and spaces

def test_non_ascii_segment_names_and_paths_work_end_to_end(root, tmp_path):
    """`--eval 'сегмент=eval.npz'` was once refused as "must be letters"; the project path has a space and ü."""
    out = tmp_path / "вывод dir" / "q.onnx"
    report = tmp_path / "вывод dir" / "отчёт.json"
    proc = run(*fill(["quantize", SPEC, MODEL, "-o", out, "--eval", "сегмент=" + EVAL, "--mode", "dynamic",
                      "--budget", "сегмент:agreement@0.5=0.5", "--bench-batch-sizes", "1",
                      "--bench-min-time", "0.01", "--json", report], root))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "сегмент" in proc.stdout
    assert [s["name"] for s in json.loads(report.read_text(encoding="utf-8"))["segments"]] == ["сегмент"]
    assert out.is_file() and out.with_name("q.manifest.json").is_file()


def test_an_unknown_non_ascii_segment_in_a_budget_is_named(root):
    refused(root, ["quantize", SPEC, MODEL, "-o", "{root}/out/q.onnx", "--eval", "сегмент=" + EVAL,
                   "--budget", "сигмент:agreement@0.5=0.9"], "сигмент")


# --------------------------------------------------------------------------- a bad number for every numeric flag

# Each command's arguments apart from the flag under test: the model paths do not exist, so a
# value the command accepts fails on the missing model instead (and the test sees it was accepted).
BASE = {
    "export": ["/nonexistent/m.py:MLP", "-o", "{root}/out/x.onnx", "--input", "x:batch,4"],
    "bench": ["/nonexistent/m.py:MLP", "/nonexistent/m.onnx"],
    "lint-ops": ["/nonexistent/m.onnx"],
    "parity": ["/nonexistent/m.py:MLP", "/nonexistent/m.onnx"],
    "quantize": ["/nonexistent/m.py:MLP", "/nonexistent/m.onnx", "-o", "{root}/out/q.onnx", "--eval", EVAL, *BUDGET],
    "runtimes": ["/nonexistent/m.onnx", *RUNTIMES],
    "serve-bench": ["/nonexistent/m.py:MLP", "/nonexistent/m.onnx", "--paths", "ort"],
}
PROBES = ["-1", "0", "nan", "inf", "-inf", "abc", "1e400"]
# (command, flag) -> the probes it accepts; every other probe must be refused naming the flag
ACCEPTED = {
    ("bench", "--threads"): {"0"}, ("parity", "--threads"): {"0"},
    ("bench", "--seed"): {"0"}, ("parity", "--seed"): {"0"}, ("quantize", "--seed"): {"0"},
    ("runtimes", "--seed"): {"0"},
    ("parity", "--rtol"): {"0"}, ("parity", "--atol"): {"0"}, ("runtimes", "--rtol"): {"0"},
    ("runtimes", "--atol"): {"0"},
    ("parity", "--min-cosine"): {"-1", "0"}, ("runtimes", "--min-cosine"): {"-1", "0"},
    ("quantize", "--max-exclude"): {"0"},
    ("parity", "--noise-factor"): {"0"}, ("runtimes", "--noise-factor"): {"0"},  # 0: the fixed floors alone
    **{("serve-bench", flag): {"0"} for flag in ("--refine", "--warmup", "--cold-start-runs", "--rtol", "--atol",
                                                 "--noise-factor", "--seed")},  # no bisection, warm-up, cold start
}
# flags whose value is a list or an assignment holding numbers: (command, flag, template for the number)
TEMPLATED = [("bench", "--batch-sizes", "1,{}"), ("quantize", "--bench-batch-sizes", "{}"),
             ("parity", "--dim", "batch={}"), ("export", "--dim", "batch={}"),
             ("parity", "--tolerance", "output={}:0"), ("parity", "--range", "x=0:{}"),
             ("bench", "--max-latency-ms", "p99={}"), ("quantize", "--budget", "max_abs={}")]
TEMPLATED_ACCEPTED = {("parity", "--tolerance"): {"0"}, ("quantize", "--budget"): {"0"}}  # exact match


def numeric_flags() -> list[tuple[str, str]]:
    """Every int and float option of every command, read from the app (new flags are covered)."""
    from onnxtax.cli._app import COMMANDS, build_command

    out = []
    for name in COMMANDS:
        for param in getattr(build_command(name), "params", []):
            if type(param.type).__name__ in ("IntParamType", "FloatParamType") and param.opts[0].startswith("--"):
                out.append((name, param.opts[0]))
    return out


NUMERIC = [(c, f, v) for c, f in numeric_flags() for v in PROBES if v not in ACCEPTED.get((c, f), set())]


def test_the_numeric_flags_are_read_from_the_app():
    flags = numeric_flags()
    assert set(ACCEPTED) <= set(flags), "ACCEPTED names a flag the app no longer has"
    assert {"export", "bench", "lint-ops", "parity", "quantize", "runtimes", "serve-bench"} <= {c for c, _ in flags}
    assert {("parity", "--samples"), ("bench", "--min-time"), ("quantize", "--bench-min-time")} <= set(flags)


def _assert_bad_number(root, command, flag, value) -> None:
    before = snapshot(root)
    proc = run(command, *fill(BASE[command], root), flag, value)
    errors = [line for line in proc.stderr.splitlines() if line.lower().startswith("error:")]
    assert proc.returncode == 2, proc.stderr
    assert len(errors) == 1 and flag in errors[0], proc.stderr  # named, not "does not exist"
    assert set(re.findall(r"--[a-z][a-z-]*", errors[0])) == {flag}, errors  # that flag alone, not a shared line
    assert "Traceback" not in proc.stderr
    if errors[0].startswith("error:"):
        assert "fix:" in proc.stderr
    assert snapshot(root) == before


@pytest.mark.parametrize("command, flag, value", NUMERIC, ids=[f"{c} {f} {v}" for c, f, v in NUMERIC])
def test_a_bad_number_is_refused_naming_its_flag(root, command, flag, value):
    _assert_bad_number(root, command, flag, value)


TEMPLATED_CASES = [(c, f, t.format(v)) for c, f, t in TEMPLATED for v in PROBES
                   if v not in TEMPLATED_ACCEPTED.get((c, f), set())]


@pytest.mark.parametrize("command, flag, value", TEMPLATED_CASES, ids=[f"{c} {f} {v}" for c, f, v in TEMPLATED_CASES])
def test_a_bad_number_inside_a_flag_is_refused_naming_it(root, command, flag, value):
    _assert_bad_number(root, command, flag, value)


@pytest.mark.parametrize("command, flag, value", [("parity", "--seed", "0"), ("bench", "--threads", "0"),
                                                  ("parity", "--min-cosine", "-1")])
def test_an_accepted_number_reaches_the_model(root, command, flag, value):
    """The other side of the probes: an accepted value goes on to the (missing) model."""
    proc = run(command, *fill(BASE[command], root), flag, value)
    assert proc.returncode == 2 and "/nonexistent/" in proc.stderr and flag not in proc.stderr


def test_a_bad_number_in_the_ci_config_is_refused_naming_its_key(root, tmp_path):
    config = tmp_path / "onnxtax.toml"
    config.write_text((root / "ci" / "onnxtax.toml").read_text().replace("samples = 1", "samples = 1\nseed = -1")
                      .replace('"../models.py:MLP"', f'"{root / "models.py"}:MLP"'))
    refused(root, ["ci", "--config", config, "--reports", tmp_path / "r"], "seed", "-1", extra=[tmp_path])
    assert not (tmp_path / "r").exists()

