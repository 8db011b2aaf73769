"""Start-up and export overhead, measured in one run.

1. Start-up: `onnxtax --help` and `onnxtax parity --help` against two floors measured in the
   same run: the bare interpreter (`python -c pass`) and a bare Typer app with nine no-op
   commands and onnxtax's settings (what any Typer CLI pays). Target: `onnxtax --help` within
   ~1.1x of the bare Typer app; it imports no command module, torch or onnxruntime.
2. `onnxtax export` on the fraud example vs a bare script doing what a user would do by
   hand: `torch.onnx.export(dynamo=True)` + save (target: onnxtax <= 1.10x). A second
   bare variant adds the full onnx.checker, to show what the checks themselves cost.

Each figure is a fresh process (what a CI step pays), repeated and interleaved so machine drift
hits every variant alike; min/median/max reported. Processes run with byte-code caching on (as
an installed package has it: PYTHONDONTWRITEBYTECODE is dropped) after one discarded warm-up.
Run: .venv/bin/python benchmarks/startup.py [--repeat N] [--startup-repeat N] [--startup-only]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = f"{ROOT}/examples/fraud_detector.py:FraudDetector"
BIN = Path(sys.executable).with_name("onnxtax")

BARE = """
import sys, torch
sys.path.insert(0, {examples!r})
from fraud_detector import FraudDetector
from torch.export import Dim
model = FraudDetector().eval()
prog = torch.onnx.export(model, (torch.randn(3, 128),), dynamo=True, opset_version=18, input_names=["x"],
                         dynamic_shapes=({{0: Dim.DYNAMIC}},), external_data=False)
prog.save({out!r})
if {check}:
    import onnx
    onnx.checker.check_model({out!r}, full_check=True)
"""


BARE_TYPER = """
import typer
app = typer.Typer(name="onnxtax", help="A bare Typer app.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]})
for name in ("export", "verify", "providers", "bench", "ci", "lint-ops", "parity", "quantize", "runtimes"):
    app.command(name, help=f"The {name} command does nothing.")(lambda: None)
app()
"""

ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(cmd: list[str], cpu: list[float] | None = None) -> float:
    """Wall time of one fresh process; its CPU time (user + system) appended to `cpu`: on a
    shared machine the CPU time moves less with other jobs' load than the wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed:\n{proc.stderr[-2000:]}")
    if cpu is not None:
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return elapsed


def stats(xs: list[float]) -> str:
    return f"min {min(xs):.3f}  median {statistics.median(xs):.3f}  max {max(xs):.3f} s"


def startup(repeat: int, tmp: str) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU seconds of each start-up variant."""
    bare_typer = Path(tmp) / "bare_typer.py"
    bare_typer.write_text(BARE_TYPER)
    variants = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "bare typer app --help": [sys.executable, str(bare_typer), "--help"],
        "bare typer app CMD --help": [sys.executable, str(bare_typer), "parity", "--help"],
        "onnxtax --help": [str(BIN), "--help"],
        "onnxtax parity --help": [str(BIN), "parity", "--help"],
    }
    for cmd in variants.values():  # warm-up: byte-code written, files in the page cache
        timed(cmd)
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeat):
        for name, cmd in variants.items():
            wall[name].append(timed(cmd, cpu[name]))
    return wall, cpu


def export(repeat: int, tmp: str) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"onnxtax export": [], "bare export": [], "bare export + checker": []}
    for _ in range(repeat):
        results["onnxtax export"].append(timed([str(BIN), "export", SPEC, "-o", f"{tmp}/a.onnx",
                                                "--input", "x:batch,128"]))
        for name, check in (("bare export", False), ("bare export + checker", True)):
            script = BARE.format(examples=str(ROOT / "examples"), out=f"{tmp}/b.onnx", check=check)
            results[name].append(timed([sys.executable, "-c", script]))
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5, help="runs of each export variant")
    ap.add_argument("--startup-repeat", type=int, default=30, help="runs of each start-up variant")
    ap.add_argument("--startup-only", action="store_true", help="skip the export comparison")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        up, up_cpu = startup(args.startup_repeat, tmp)
        exp = {} if args.startup_only else export(args.repeat, tmp)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, fresh process per run")
    print(f"start-up, {args.startup_repeat} runs each:")
    for name, xs in up.items():
        print(f"  {name:26} wall {stats(xs)}   CPU {stats(up_cpu[name])}")
    for label, times in (("wall", up), ("CPU", up_cpu)):
        m = {k: statistics.median(v) for k, v in times.items()}
        print(f"onnxtax --help ({label}, medians): {m['onnxtax --help']:.3f} s = "
              f"{m['onnxtax --help'] / m['bare typer app --help']:.2f}x the bare Typer app (target ~1.1x); "
              f"above the bare interpreter {m['onnxtax --help'] - m['python -c pass']:.3f} s, "
              f"bare Typer app {m['bare typer app --help'] - m['python -c pass']:.3f} s")
    med = {k: statistics.median(v) for k, v in exp.items()}
    if exp:
        print(f"export, {args.repeat} runs each:")
        for name, xs in exp.items():
            print(f"  {name:24} {stats(xs)}")
        print(f"onnxtax export / bare export: {med['onnxtax export'] / med['bare export']:.2f}x (target <= 1.10x); "
              f"/ bare export + checker: {med['onnxtax export'] / med['bare export + checker']:.2f}x")


if __name__ == "__main__":
    main()
