"""What `onnxtax parity` costs over doing the same comparison by hand.

Exports examples/fraud_detector.py:FraudDetector (x: [batch, 128]) once with
`onnxtax export`, then times three processes, rotating their order each repetition:
  - `onnxtax parity SPEC fraud.onnx` (defaults: batch 1, 4, 7 x 3 samples on the CPU
    provider, placement record, table);
  - `check_parity(SPEC, fraud.onnx)` called from a 3-line script: the library without the
    CLI (Typer, Rich), to tell the two costs apart;
  - a bare script that imports torch and onnxruntime, builds the model and one session,
    and runs the same 9 inputs through both, comparing with np.allclose.
All are whole processes (interpreter start to exit): the wall time a CI step pays. CPU
time (user + sys) is shown too: it moves less than wall time on a shared machine.
Prints min / median / max and the ratios of the medians to the bare script; the target
for `onnxtax parity` is <= 1.0x (at or under the bare script).

    .venv/bin/python benchmarks/parity_overhead.py [--reps 7] [--strict] [--json PATH]

`--strict` exits 1 when the median ratio misses the target (default: report only,
since a shared machine's noise is not the tool's fault).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "fraud_detector.py"
SPEC = f"{EXAMPLE}:FraudDetector"
TARGET = 1.0

BARE = r'''
import importlib.util, sys
import numpy as np
import onnxruntime as ort
import torch

spec = importlib.util.spec_from_file_location("fraud_detector", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
model = mod.FraudDetector().eval()
session = ort.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
ok = True
for batch in (1, 4, 7):
    for k in range(3):
        rng = np.random.default_rng([0, k])
        x = (rng.standard_normal((batch, 128)) * (1.0, 0.1, 10.0)[k]).astype(np.float32)
        with torch.inference_mode():
            ref = model(torch.from_numpy(x)).numpy()
        got = session.run(None, {name: x})[0]
        ok &= bool(np.allclose(got, ref, rtol=1e-4, atol=1e-5))
print("passed" if ok else "FAILED")
sys.exit(0 if ok else 1)
'''


LIBRARY = r'''
import sys
from onnxtax.parity import check_parity
sys.exit(0 if check_parity(sys.argv[1], sys.argv[2]) else 1)
'''


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one child process."""
    env = dict(os.environ, COLUMNS="160")
    env.pop("GITHUB_STEP_SUMMARY", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def stats(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--strict", action="store_true", help="exit 1 when the median ratio misses the target")
    parser.add_argument("--json", type=Path, help="also write the numbers as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "fraud.onnx"
        bare, library = Path(tmp) / "bare_parity.py", Path(tmp) / "library_parity.py"
        bare.write_text(BARE)
        library.write_text(LIBRARY)
        subprocess.run([sys.executable, "-m", "onnxtax", "export", SPEC, "-o", str(onnx_path), "--input",
                        "x:batch,128"], check=True, capture_output=True)
        commands = {
            "onnxtax parity": [sys.executable, "-m", "onnxtax", "parity", SPEC, str(onnx_path)],
            "check_parity()": [sys.executable, str(library), SPEC, str(onnx_path)],
            "bare script": [sys.executable, str(bare), str(EXAMPLE), str(onnx_path)],
        }
        for cmd in commands.values():  # warm the page cache for all
            timed(cmd)
        wall: dict[str, list[float]] = {k: [] for k in commands}
        cpu: dict[str, list[float]] = {k: [] for k in commands}
        keys = list(commands)
        for rep in range(args.reps):
            for key in keys[rep % len(keys):] + keys[:rep % len(keys)]:
                w, c = timed(commands[key])
                wall[key].append(w)
                cpu[key].append(c)

    summary = {k: {"wall": stats(wall[k]), "cpu": stats(cpu[k])} for k in commands}
    base = summary["bare script"]
    ratios = {k: {m: summary[k][m]["median"] / base[m]["median"] for m in ("wall", "cpu")} for k in commands}
    print(f"fraud_detector, batch 1/4/7 x 3 samples, CPU provider; {args.reps} repetitions, whole processes")
    print(f"{'':16} {'wall min':>9} {'median':>7} {'max':>6}   {'cpu min':>8} {'median':>7} {'max':>6}   "
          f"{'ratio wall':>10} {'cpu':>5}")
    for key, s in summary.items():
        w, c = s["wall"], s["cpu"]
        print(f"{key:16} {w['min']:9.3f} {w['median']:7.3f} {w['max']:6.3f}   {c['min']:8.3f} {c['median']:7.3f} "
              f"{c['max']:6.3f}   {ratios[key]['wall']:9.3f}x {ratios[key]['cpu']:4.2f}x")
    ratio = ratios["onnxtax parity"]["wall"]
    met = ratio <= TARGET
    print(f"onnxtax parity / bare script, median wall: {ratio:.3f}x (target <= {TARGET}x: "
          f"{'met' if met else 'MISSED'})")
    if args.json:
        args.json.write_text(json.dumps({"reps": args.reps, "wall_s": wall, "cpu_s": cpu, "summary": summary,
                                         "ratios": ratios, "target": TARGET}, indent=2) + "\n")
    return 1 if args.strict and not met else 0


if __name__ == "__main__":
    sys.exit(main())
