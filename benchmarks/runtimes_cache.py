"""What a runtime matrix costs, per onnxruntime release, measured in one run.

1. First run: building the release's virtualenv (`python -m venv` + `pip install
   onnxruntime==V [numpy<2]`) into an empty cache. pip's own download cache is left as it
   is, so a release pip fetched before installs from disk (the figure says which).
2. Cached run: `onnxtax runtimes MODEL.onnx SPEC --ort V` as a CI step runs it (a fresh
   process: imports, eager reference at 3 shapes x 3 samples, the release's child process,
   comparison), the virtualenv already built.
3. Floor: the same release's python loading the same model and running it once at each of
   the 3 shapes, nothing else (a bare `python -c` in that virtualenv): what the release alone
   costs. The ratio cached / floor is what onnxtax adds (torch import and the eager model
   included, which the floor does not need).

Each figure is a fresh process, repeated; min/median/max reported.
Run: .venv/bin/python benchmarks/runtimes_cache.py [--ort 1.16.3,1.18.1] [--repeat N]
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

FLOOR = """
import numpy as np, onnxruntime as ort
s = ort.InferenceSession({path!r}, providers=["CPUExecutionProvider"])
for n in (1, 4, 7):
    s.run(None, {{"x": np.random.default_rng(0).standard_normal((n, 128)).astype(np.float32)}})
"""


def timed(cmd: list[str], env: dict | None = None, ok=(0,)) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode not in ok:
        raise SystemExit(f"{' '.join(map(str, cmd[:4]))} failed:\n{proc.stderr[-2000:]}")
    return elapsed


def stats(xs: list[float]) -> str:
    return f"min {min(xs):.2f}  median {statistics.median(xs):.2f}  max {max(xs):.2f} s"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ort", default="1.16.3,1.18.1,1.20.1")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from onnxtax.runtimes.envs import ensure_env

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        model = tmp_path / "fraud.onnx"
        # IR 8, so that every release from 1.15 on loads it
        timed([sys.executable, "-m", "onnxtax", "export", SPEC, "-o", str(model), "-i", "x:batch,128",
               "--target-ort", "1.15", "--offline"], env=env)
        for version in args.ort.split(","):
            cache = tmp_path / f"cache-{version}"
            t0 = time.perf_counter()
            built = ensure_env(version, cache)
            first = time.perf_counter() - t0
            cached, floor = [], []
            for _ in range(args.repeat):
                cached.append(timed([sys.executable, "-m", "onnxtax", "runtimes", str(model), SPEC, "--ort", version,
                                     "--cache-dir", str(cache), "--offline", "--json", str(tmp_path / "r.json")],
                                    env=env))
                floor.append(timed([str(built.python), "-I", "-c", FLOOR.format(path=str(model))]))
            ratio = [c / f for c, f in zip(cached, floor)]
            print(f"onnxruntime {version} (numpy {built.numpy}):")
            print(f"  first run, virtualenv build: {first:.1f} s")
            print(f"  cached run, onnxtax runtimes: {stats(cached)}")
            print(f"  floor, the release alone:     {stats(floor)}")
            print(f"  ratio cached/floor: min {min(ratio):.1f}x  median {statistics.median(ratio):.1f}x  "
                  f"max {max(ratio):.1f}x")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
