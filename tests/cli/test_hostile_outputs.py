"""Outputs never land on inputs, and outputs that cannot be written are refused before the work.

A report path that is also an input once overwrote it with exit 0 (`parity M.py:MLP m.onnx --json
m.onnx`). Every command, every output flag, every input it reads (the model, its manifest, the
spec's file, a data file, the config), and every spelling of the same file (`./`, `..`, a symlink,
a hard link): exit 2 with one `error:` line naming both, a `fix:`, and no file changed or left.
Then outputs on a read-only mount or an immutable folder, and the runtime cache a failed build
leaves behind. In process, on one shared export: a few seconds in all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.models.hostile import make_project, run, snapshot

SPEC = "{root}/models.py:MLP"
MODEL = "{root}/m.onnx"
BUDGET = ["--budget", "agreement@0.5=0.9"]

# victim -> (its path, the words the refusal uses for it)
VICTIMS = {
    "model": ("{root}/m.onnx", "is the model"),
    "manifest": ("{root}/m.manifest.json", "is the manifest of m.onnx"),
    "spec": ("{root}/models.py", "is the model's source file"),
    "data": ("{root}/data/eval.npz", "is the data file eval.npz"),
    "eval": ("{root}/data/eval.npz", "is the --eval data"),
    "calibration": ("{root}/data/cal.npz", "is the --calibration data"),
    "config": ("{root}/ci/onnxtax.toml", "is the config file"),
}

# command -> (its arguments, the output flags it has, the inputs it reads)
COMMANDS = {
    "parity": (["parity", SPEC, MODEL, "--data", "{root}/data/eval.npz"], ["--json", "--junit", "--sarif"],
               ["model", "manifest", "spec", "data"]),
    "bench": (["bench", SPEC, MODEL, "--no-cold-start"], ["--json", "--plot"], ["model", "manifest", "spec"]),
    "lint-ops": (["lint-ops", MODEL, "--source", SPEC], ["--json", "--sarif"], ["model", "manifest", "spec"]),
    "runtimes": (["runtimes", MODEL, SPEC, "--ort", "1.20.1", "--offline", "--data", "{root}/data/eval.npz"],
                 ["--json", "--junit", "--markdown"], ["model", "manifest", "spec", "data"]),
    "quantize": (["quantize", SPEC, MODEL, "--eval", "{root}/data/eval.npz", "--calibration", "{root}/data/cal.npz",
                  *BUDGET, "-o", "{root}/out/q.onnx"], ["-o", "--json"],
                 ["model", "manifest", "spec", "eval", "calibration"]),
    "export": (["export", SPEC, "-o", "{root}/out/e.onnx", "--input", "x:batch,4", "--exporter", "torchscript",
                "--data", "{root}/data/eval.npz"], ["-o", "--json"], ["spec", "data"]),
    "verify": (["verify", MODEL], ["--json"], ["model", "manifest"]),
    "ci": (["ci", "--config", "{root}/ci/onnxtax.toml", "--reports", "{root}/out/reports"], ["--json"],
           ["config", "spec"]),
}

CASES = [(command, flag, victim) for command, (_, flags, victims) in COMMANDS.items()
         for flag in flags for victim in victims]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("outputs"))


def fill(text: str, root: Path) -> str:
    return text.replace("{root}", str(root))


def command_args(command: str, flag: str, target: str, root: Path) -> list[str]:
    """The command's arguments with `flag` set to `target` (replacing a flag it already has)."""
    args = [fill(a, root) for a in COMMANDS[command][0]]
    if flag in args:
        args[args.index(flag) + 1] = target
    else:
        args += [flag, target]
    return args


def assert_refused(proc, *words: str) -> None:
    """Exit 2, one `error:` line holding every word, a `fix:`, no traceback."""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(errors) == 1 and all(w in errors[0] for w in words), proc.stderr
    assert "fix:" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("command, flag, victim", CASES, ids=[f"{c} {f} onto {v}" for c, f, v in CASES])
def test_an_output_onto_an_input_is_refused_before_the_work(root, command, flag, victim):
    path, what = VICTIMS[victim]
    before = snapshot(root)
    proc = run(*command_args(command, flag, fill(path, root), root))
    assert_refused(proc, f"{flag} {fill(path, root)} {what}", "writing it would destroy it")
    assert snapshot(root) == before


def _dot(root: Path, victim: Path, links: Path) -> str:
    return "./" + str(victim.relative_to(root))


def _dotdot(root: Path, victim: Path, links: Path) -> str:
    return str(root / "data" / ".." / victim.relative_to(root))


def _symlink(root: Path, victim: Path, links: Path) -> str:
    (links / "report.json").symlink_to(victim)
    return str(links / "report.json")


def _hardlink(root: Path, victim: Path, links: Path) -> str:
    os.link(victim, links / "report.json")
    return str(links / "report.json")


def _linked_folder(root: Path, victim: Path, links: Path) -> str:
    (links / "project").symlink_to(root, target_is_directory=True)
    return str(links / "project" / victim.relative_to(root))


SPELLINGS = {"./": _dot, "..": _dotdot, "symlink": _symlink, "hard link": _hardlink, "linked folder": _linked_folder}
SPELLED = [(command, flag, victim, spelling)
           for command, flag, victim in [("parity", "--json", "model"), ("parity", "--junit", "manifest"),
                                         ("quantize", "-o", "model"), ("quantize", "--json", "eval"),
                                         ("export", "-o", "spec"), ("lint-ops", "--sarif", "model"),
                                         ("runtimes", "--markdown", "data"), ("ci", "--json", "config")]
           for spelling in SPELLINGS]


@pytest.mark.parametrize("command, flag, victim, spelling", SPELLED,
                         ids=[f"{c} {f} onto {v} by {s}" for c, f, v, s in SPELLED])
def test_every_spelling_of_an_input_is_the_input(root, tmp_path, command, flag, victim, spelling):
    target = SPELLINGS[spelling](root, Path(fill(VICTIMS[victim][0], root)), tmp_path)
    before = snapshot(root, tmp_path)
    proc = run(*command_args(command, flag, target, root), cwd=root)
    assert_refused(proc, f"{flag} {Path(target)} {VICTIMS[victim][1]}", "writing it would destroy it")
    assert snapshot(root, tmp_path) == before


def test_an_input_given_through_a_link_is_still_the_input(root, tmp_path):
    """The model given by a symlink, the report at its real path."""
    (tmp_path / "m.onnx").symlink_to(root / "m.onnx")
    (tmp_path / "m.manifest.json").symlink_to(root / "m.manifest.json")
    before = snapshot(root, tmp_path)
    proc = run("parity", fill(SPEC, root), tmp_path / "m.onnx", "--json", root / "m.onnx")
    assert_refused(proc, f"--json {root / 'm.onnx'} is the model ({tmp_path / 'm.onnx'})")
    assert snapshot(root, tmp_path) == before


def test_two_outputs_on_one_file_are_refused(root, tmp_path):
    before = snapshot(root, tmp_path)
    proc = run("parity", fill(SPEC, root), root / "m.onnx", "--json", tmp_path / "r.json",
                          "--junit", tmp_path / "." / "r.json")
    assert_refused(proc, "--junit", "and --json", "are the same file")
    assert snapshot(root, tmp_path) == before


def test_a_ci_report_onto_a_models_data_file_is_refused(root, tmp_path):
    """`--reports R` writes R/m.json: a data file of model m at that path would be lost."""
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "m.json").write_bytes((root / "data" / "eval.npz").read_bytes())
    config = tmp_path / "onnxtax.toml"
    config.write_text(fill('exporter = "torchscript"\noutput_dir = "onnx"\n[models.m]\nspec = "{root}/models.py:MLP"\n'
                           'inputs = ["x:batch,4"]\ndata = ["r/m.json"]\n', root))
    before = snapshot(root, tmp_path)
    proc = run("ci", "--config", config, "--reports", tmp_path / "r")
    assert_refused(proc, f"--reports (m.json) {tmp_path / 'r' / 'm.json'} is a data file of model m")
    proc = run("ci", "--config", config, "--reports", tmp_path / "r2", "--json", tmp_path / "r2" / "ci.json")
    assert_refused(proc, "are the same file", "--json")
    assert snapshot(root, tmp_path) == before


def test_report_merge_never_writes_over_a_report_it_reads(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    for name in ("ci.json", "m.json", "matrix.json"):
        (reports / name).write_text("{}")
    before = snapshot(tmp_path)
    proc = run("report", "merge", reports, "-o", reports)
    assert_refused(proc, f"--output (matrix.json) {reports / 'matrix.json'} is a report being merged")
    proc = run("report", "merge", reports, "--json", reports / "m.json")
    assert_refused(proc, f"--json {reports / 'm.json'} is a report being merged")
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- outputs that cannot be written

READ_ONLY_RUNS = [  # (arguments with {ro} for the read-only folder, the flag named)
    (["parity", SPEC, MODEL, "--json", "{ro}/parity.json"], "--json"),
    (["parity", SPEC, MODEL, "--junit", "{ro}/sub/junit.xml"], "--junit"),
    (["bench", SPEC, MODEL, "--no-cold-start", "--plot", "{ro}/latency.png"], "--plot"),
    (["lint-ops", MODEL, "--sarif", "{ro}/lint.sarif"], "--sarif"),
    (["quantize", SPEC, MODEL, "--eval", "{root}/data/eval.npz", *BUDGET, "-o", "{ro}/q.onnx"], "-o"),
    (["export", SPEC, "-o", "{ro}/e.onnx", "--input", "x:batch,4", "--exporter", "torchscript"], "-o"),
    (["verify", MODEL, "--json", "{ro}/verify.json"], "--json"),
    (["runtimes", MODEL, SPEC, "--ort", "1.20.1", "--offline", "--markdown", "{ro}/matrix.md"], "--markdown"),
    (["ci", "--config", "{root}/ci/onnxtax.toml", "--reports", "{ro}/reports"], "--reports"),
]

# Runs inside a private mount namespace where {ro} is a read-only bind mount of itself: every
# command in process, one interpreter for all (unshare needs root; the mount ends with the process).
RO_SCRIPT = r'''
import json, subprocess, sys
ro, root, cases = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
subprocess.run(["mount", "--bind", "-o", "ro", ro, ro], check=True)
from tests.models.hostile import run
out = []
for args in cases:
    proc = run(*[a.replace("{ro}", ro).replace("{root}", root) for a in args])
    out.append([proc.returncode, proc.stderr])
print(json.dumps(out))
'''


def test_outputs_on_a_read_only_mount_are_refused_before_the_work(root, tmp_path):
    ro = tmp_path / "read only ü"
    ro.mkdir()
    if os.geteuid() != 0:  # not root: a folder without write permission is read-only to this process
        ro.chmod(0o555)
        try:
            before = snapshot(root, tmp_path)
            for args, flag in READ_ONLY_RUNS:
                proc = run(*[fill(a, root).replace("{ro}", str(ro)) for a in args])
                assert_refused(proc, f"cannot write {flag} {ro}", "Permission denied")
            assert snapshot(root, tmp_path) == before
        finally:
            ro.chmod(0o755)
        return
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("root without unshare -m: permissions do not bind root, and no read-only mount can be made")
    before = snapshot(root, tmp_path)
    import json

    proc = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", RO_SCRIPT, str(ro),
                           str(root), json.dumps([args for args, _ in READ_ONLY_RUNS])],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2],
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert proc.returncode == 0, proc.stderr
    for (args, flag), (code, stderr) in zip(READ_ONLY_RUNS, json.loads(proc.stdout.splitlines()[-1])):
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1, (args, stderr)
        assert f"cannot write {flag} {ro}" in errors[0] and "Read-only file system" in errors[0], errors
    assert snapshot(root, tmp_path) == before  # nothing written, no probe or staging file left


def test_an_immutable_output_folder_is_refused_before_the_work(root, tmp_path):
    folder = tmp_path / "immutable"
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        before = snapshot(root, tmp_path)
        for args, flag in READ_ONLY_RUNS[:5]:
            proc = run(*[fill(a, root).replace("{ro}", str(folder)) for a in args])
            assert_refused(proc, f"cannot write {flag} {folder}", "Operation not permitted")
        assert snapshot(root, tmp_path) == before
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


# --------------------------------------------------------------------------- the runtime cache

@pytest.mark.parametrize("fails_in", ["venv", "pip"])
def test_a_failed_runtime_build_leaves_nothing_in_the_cache(tmp_path, monkeypatch, fails_in):
    """`runtimes --ort 0.0.1` once left an empty lock file in the runtime cache."""
    from onnxtax.runtimes import envs

    def fail(*args, **kwargs):
        raise envs.RuntimeEnvError("cannot install onnxruntime 0.0.1: no such release", "pick a released version")

    monkeypatch.setattr(envs, "_check_call" if fails_in == "venv" else "_pip_install", fail)
    if fails_in == "pip":
        monkeypatch.setattr(envs, "_check_call", lambda cmd, *a: Path(cmd[-1], "bin").mkdir(parents=True))
    cache = tmp_path / "cache" / "runtimes"
    (tmp_path / "kept").mkdir()
    with pytest.raises(envs.RuntimeEnvError, match="no such release"):
        envs.ensure_env("0.0.1", cache)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]  # the folders it made, removed too
    kept = tmp_path / "kept" / "cache"
    kept.mkdir()
    with pytest.raises(envs.RuntimeEnvError):
        envs.ensure_env("0.0.1", kept)
    assert kept.is_dir() and list(kept.iterdir()) == []  # a folder the user made stays, empty


def test_a_waiter_locks_the_file_now_at_the_path_when_the_holder_removed_its_own(tmp_path):
    """The holder removes the lock file on release; a waiter that locked the removed file must lock the
    path's new file, or a third process could lock that one and build beside it."""
    import threading

    from onnxtax.core.paths import BuildLock

    path = tmp_path / ".ort-1.20.1-py311.lock"
    said, got = [], []
    first = BuildLock(path, "onnxruntime 1.20.1", said.append).__enter__()

    def wait():
        with BuildLock(path, "onnxruntime 1.20.1", said.append) as second:
            got.append(os.path.samestat(os.fstat(second.fd), os.stat(path)))  # holds the file at the path

    waiter = threading.Thread(target=wait)
    waiter.start()
    while not said:  # the waiter blocks on the first holder's file
        waiter.join(0.01)
    first.__exit__(None, None, None)
    waiter.join(10)
    assert said == ["onnxruntime 1.20.1: waiting for another process that is building it"]
    assert got == [True]
    assert not path.exists()
