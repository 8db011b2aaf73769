"""Start-up and export overhead, measured in one run.

1. `onnxtax --help` wall time (target <= 0.2 s; it must not import torch or onnxruntime).
2. `onnxtax export` on the fraud example vs a bare script doing what a user would do by
   hand: `torch.onnx.export(dynamo=True)` + save (target: onnxtax <= 1.10x). A second
   bare variant adds the full onnx.checker, to show what the checks themselves cost.

Each figure is a fresh process (what a CI step pays), repeated; min/median/max reported.
Run: .venv/bin/python benchmarks/startup.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
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


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed:\n{proc.stderr[-2000:]}")
    return elapsed


def stats(xs: list[float]) -> str:
    return f"min {min(xs):.3f}  median {statistics.median(xs):.3f}  max {max(xs):.3f} s"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results: dict[str, list[float]] = {"help": [], "onnxtax export": [], "bare export": [],
                                           "bare export + checker": []}
        for i in range(args.repeat):  # interleaved so machine drift hits every variant alike
            results["help"].append(timed([str(BIN), "--help"]))
            results["onnxtax export"].append(timed([str(BIN), "export", SPEC, "-o", f"{tmp}/a.onnx",
                                                    "--input", "x:batch,128"]))
            for name, check in (("bare export", False), ("bare export + checker", True)):
                script = BARE.format(examples=str(ROOT / "examples"), out=f"{tmp}/b.onnx", check=check)
                results[name].append(timed([sys.executable, "-c", script]))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {args.repeat} runs each (fresh process)")
    for name, xs in results.items():
        print(f"  {name:24} {stats(xs)}")
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"onnxtax --help: {med['help']:.3f} s (target <= 0.2 s)")
    print(f"onnxtax export / bare export: {med['onnxtax export'] / med['bare export']:.2f}x (target <= 1.10x); "
          f"/ bare export + checker: {med['onnxtax export'] / med['bare export + checker']:.2f}x")


if __name__ == "__main__":
    main()
