"""Real processes, real signals: Ctrl-C mid-run leaves nothing behind (exit 130: no staging
folder, no partial report, no probe or temporary file, no folder the run made), SIGTERM unwinds
like Ctrl-C (exit 143, staging removed, ci's interrupted report written), and a staging folder a
SIGKILL left behind is removed by the next export into that folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.conftest import run_cli

# The eager reference run (before staging) is fast; the exporter's trace (inside the staging
# folder's lifetime) sleeps, so a signal always lands while the folder exists.
SLOW = '''
import os
import time
import torch


class SlowToTrace(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 2)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls > 1:
            time.sleep(60)
        return self.lin(x)


class Quick(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.lin(x)


class SlowWhenAsked(Quick):
    """Quick, until $SLOW_MARKER names a file: then each call writes it and sleeps (a long run)."""

    def forward(self, x):
        marker = os.environ.get("SLOW_MARKER")
        if marker:
            open(marker, "w").close()
            time.sleep(60)
        return self.lin(x)
'''


def ctrl_c_as_in_a_terminal() -> None:
    """The child's SIGINT as a terminal gives it. A suite started in the background (`make test &`,
    some CI runners) has SIGINT ignored, the child inherits that, and Python then leaves Ctrl-C
    ignored too: the SIGINT tests would wait out their timeout instead of testing anything."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, COLUMNS="200")
    env.pop("GITHUB_STEP_SUMMARY", None)
    return subprocess.Popen([sys.executable, "-m", "onnxtax", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_as_in_a_terminal)


def staging_folders(folder: Path) -> list[Path]:
    return sorted(folder.glob(".onnxtax-*")) if folder.is_dir() else []


def wait_for_staging(proc: subprocess.Popen, folder: Path, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [f for f in staging_folders(folder) if (f / "owner.json").is_file()]
        if found:
            return found[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the export never reached its staging folder")


def export_args(out: Path, name: str = "SlowToTrace") -> list[str]:
    return ["export", f"slow.py:{name}", "-o", str(out), "--input", "x:batch,4", "--exporter", "torchscript"]


def test_sigterm_during_export_removes_the_staging_folder_and_exits_143(tmp_path):
    (tmp_path / "slow.py").write_text(SLOW)
    proc = start(export_args(tmp_path / "out" / "m.onnx"), tmp_path)
    stage = wait_for_staging(proc, tmp_path / "out")
    assert json.loads((stage / "owner.json").read_text())["pid"] == proc.pid
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted (SIGTERM)" in err and "Traceback" not in err
    assert staging_folders(tmp_path / "out") == []
    assert not (tmp_path / "out" / "m.onnx").exists()


def leftovers(folder: Path) -> list[str]:
    """Everything under `folder` but the files a test put there itself."""
    mine = ("slow.py", "m.onnx", "m.manifest.json", "running.marker")
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name not in mine)


def test_sigint_during_export_leaves_nothing_behind(tmp_path):
    """Ctrl-C while the exporter traces: exit 130, no staging folder, no partial file, and not even
    the output folder the export made for itself."""
    (tmp_path / "slow.py").write_text(SLOW)
    proc = start(export_args(tmp_path / "out" / "sub" / "m.onnx"), tmp_path)
    wait_for_staging(proc, tmp_path / "out" / "sub")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted (SIGINT)" in err and "Traceback" not in err
    assert leftovers(tmp_path) == []


def test_sigint_during_parity_writes_no_report_and_leaves_no_temporary_file(tmp_path):
    from onnxtax.export import export_model

    (tmp_path / "slow.py").write_text(SLOW)
    assert export_model(f"{tmp_path / 'slow.py'}:SlowWhenAsked", tmp_path / "m.onnx", ["x:batch,4"],
                        exporter="torchscript")
    marker = tmp_path / "running.marker"
    env = dict(os.environ, COLUMNS="200", SLOW_MARKER=str(marker))
    env.pop("GITHUB_STEP_SUMMARY", None)
    proc = subprocess.Popen([sys.executable, "-m", "onnxtax", "parity", "slow.py:SlowWhenAsked", "m.onnx",
                             "--json", "reports/parity.json", "--junit", "reports/junit.xml", "--sarif", "r.sarif"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=ctrl_c_as_in_a_terminal)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted (SIGINT)" in err and "Traceback" not in err
    assert leftovers(tmp_path) == []  # no report, no reports/ folder, no probe or .tmp file


def test_a_folder_left_by_sigkill_is_removed_by_the_next_export(tmp_path):
    (tmp_path / "slow.py").write_text(SLOW)
    out = tmp_path / "out"
    proc = start(export_args(out / "m.onnx"), tmp_path)
    stage = wait_for_staging(proc, out)
    proc.kill()
    proc.communicate(timeout=60)
    assert staging_folders(out) == [stage]  # SIGKILL cannot clean up
    other = out / ".onnxtax-live"  # a staging folder whose owner still runs (this test) stays
    other.mkdir()
    (other / "owner.json").write_text(json.dumps(json.loads((stage / "owner.json").read_text())
                                                 | {"pid": os.getpid(), "started": _start_of(os.getpid())}))
    from onnxtax.export import export_model

    done = export_model(f"{tmp_path / 'slow.py'}:Quick", out / "m.onnx", ["x:batch,4"], exporter="torchscript")
    assert done, done.error
    assert staging_folders(out) == [other]
    assert (out / "m.onnx").is_file()


def _start_of(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[19]


def test_sigterm_during_ci_writes_the_interrupted_report_and_fails_the_merge(tmp_path):
    (tmp_path / "slow.py").write_text(SLOW)
    (tmp_path / "onnxtax.toml").write_text(textwrap.dedent("""
        exporter = "torchscript"
        output_dir = "onnx"
        [parity]
        providers = ["cpu"]
        [models.slow]
        spec = "slow.py:SlowToTrace"
        inputs = ["x:batch,4"]
        [models.quick]
        spec = "slow.py:Quick"
        inputs = ["x:batch,4"]
        """))
    reports = tmp_path / "reports"
    proc = start(["ci", "--config", str(tmp_path / "onnxtax.toml"), "--reports", str(reports)], tmp_path)
    wait_for_staging(proc, tmp_path / "onnx")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    run = json.loads((reports / "ci.json").read_text())
    assert (run["interrupted"], run["signal"], run["exit_code"], run["passed"]) == (True, "SIGTERM", 143, False)
    assert [m["status"] for m in run["models"]] == ["not_run", "not_run"]
    assert staging_folders(tmp_path / "onnx") == []
    merged = run_cli("report", "merge", reports)
    assert merged.returncode == 1, merged.stdout + merged.stderr
    assert "interrupted by SIGTERM (exit 143): 0 of 2 models finished" in merged.stdout


def test_sigterm_during_an_import_waits_for_the_import_to_finish(tmp_path):
    """An exception raised inside a C extension's initialisation (onnx through nanobind) aborts
    the process; the handler defers until the import is done, then unwinds as usual."""
    (tmp_path / "slow_module.py").write_text("import time\nprint('importing', flush=True)\ntime.sleep(2)\n")
    script = textwrap.dedent("""
        import signal, sys, time
        from onnxtax.cli import _on_sigterm
        from onnxtax.core.errors import Terminated
        signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            import slow_module
            print("imported", flush=True)
            time.sleep(30)
        except Terminated:
            print("terminated", "slow_module" in sys.modules, flush=True)
        """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2]),
                                                                              str(tmp_path)])))
    assert proc.stdout.readline().strip() == "importing"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert out.split() == ["imported", "terminated", "True"]
