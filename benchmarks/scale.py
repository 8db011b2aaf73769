"""What each onnxtax stage costs on a big model, against the bare tools doing the same work.

Builds, in code (no download), N x Linear(8192, 8192) FP32 (4 layers: 1.07 GB of weights,
stored inside the .onnx; 10 layers: 2.68 GB, stored as external data), exports it once with
`onnxtax export`, then runs every stage and its bare floor each in a fresh process:

  export    `onnxtax export`           vs torch.onnx.export(dynamo=True) + onnx.checker full check by path
  parity    `onnxtax parity` (defaults: batch 1, 4, 7 x 3 samples, CPU)
                                       vs build the eager model, one ORT session, the same 9 runs through both
  localize  `onnxtax parity --localize` of an eager model whose middle layer's weight is scaled by
            1.01 (`build_wrong`: parity fails, localisation runs)
                                       vs the parity floor
  lint-ops  `onnxtax lint-ops`         vs onnx.load + one InferenceSession
  verify    `onnxtax verify`           vs sha256 of every file
  bench     `onnxtax bench` (batch 1, 0.3 s per path, no cold start)
                                       vs eager + one ORT session (the parity floor)

Wall time and peak RSS (ru_maxrss of that child alone, from os.wait4) per process, each started
after os.sync(); the ratios
are of the medians over --reps repetitions (min / median / max printed), and peak RSS is also
given as a multiple of the weights' size. Processes run one after another, never in parallel:
on a shared machine, run the 2.7 GB size once (`--layers 10 --reps 1`).

    .venv/bin/python benchmarks/scale.py [--layers 4] [--reps 1] [--stages export,parity,...] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 8192
STAGES = ("export", "parity", "localize", "lint-ops", "verify", "bench")

MODEL = '''
import torch

LAYERS = {layers}
WIDTH = {width}


class Stack(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(WIDTH, WIDTH) for _ in range(LAYERS))

    def forward(self, x):
        for layer in self.layers:
            x = torch.relu(layer(x)) * 0.5
        return x


def build():
    torch.manual_seed(0)
    with torch.no_grad():
        model = Stack()
    return model.eval()


def build_wrong():
    """The exported model with the middle layer's weight changed: what --localize must find."""
    model = build()
    with torch.no_grad():
        model.layers[LAYERS // 2].weight.mul_(1.01)
    return model
'''

BARE_EXPORT = r'''
import importlib.util, sys
import onnx, torch
spec = importlib.util.spec_from_file_location("scale_model", sys.argv[1])
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
model = mod.build()
batch = torch.export.Dim("batch")
x = torch.randn(3, mod.WIDTH)
external = sys.argv[3] == "1"
program = torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=({0: batch},), opset_version=18)
program.save(sys.argv[2], external_data=external)
onnx.checker.check_model(sys.argv[2], full_check=True)
'''

BARE_PARITY = r'''
import importlib.util, sys
import numpy as np, onnxruntime as ort, torch
spec = importlib.util.spec_from_file_location("scale_model", sys.argv[1])
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
model = mod.build()
session = ort.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
ok = True
for batch in (1, 4, 7):
    for k in range(3):
        rng = np.random.default_rng([0, k])
        x = (rng.standard_normal((batch, mod.WIDTH)) * (1.0, 0.1, 10.0)[k]).astype(np.float32)
        with torch.inference_mode():
            ref = model(torch.from_numpy(x)).numpy()
        got = session.run(None, {name: x})[0]
        ok &= bool(np.allclose(got, ref, rtol=1e-4, atol=1e-5))
sys.exit(0 if ok else 1)
'''

BARE_LOAD = r'''
import sys
import onnx, onnxruntime as ort
model = onnx.load(sys.argv[1])
onnx.checker.check_model(model if model.ByteSize() < 2**31 - 1 else sys.argv[1])
del model
ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
'''

BARE_VERIFY = r'''
import hashlib, sys
from pathlib import Path
for p in sys.argv[1:]:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
'''


def run(cmd: list[str], env: dict | None = None, expect: int = 0) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in GB, exit code) of one child process; another exit code than
    `expect` prints the child's last lines. The page cache's dirty pages are flushed first
    (os.sync, untimed): otherwise the gigabytes the previous process wrote throttle this one's
    writes, and export times measure the order of the runs."""
    gc.collect()
    os.sync()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != expect:
        tail = "\n".join(err.strip().splitlines()[-5:])
        print(f"    exit {proc.returncode}: {' '.join(cmd[:4])} ...\n    {tail}", file=sys.stderr)
    return wall, usage.ru_maxrss * 1024 / 1e9, proc.returncode  # ru_maxrss is KiB on Linux; GB like the weights


def stats(values: list[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4, help="Linear(8192, 8192) layers: 4 = 1.07 GB, 10 = 2.68 GB")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--workdir", type=Path, default=None, help="keep files here (default: a temporary folder)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    py = sys.executable
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    weights_gb = args.layers * (WIDTH * WIDTH + WIDTH) * 4 / 1e9
    tmp = tempfile.TemporaryDirectory(prefix="onnxtax-scale-") if args.workdir is None else None
    work = Path(tmp.name) if tmp else args.workdir
    work.mkdir(parents=True, exist_ok=True)
    model_file = work / f"scale_{args.layers}.py"
    model_file.write_text(MODEL.format(layers=args.layers, width=WIDTH))
    spec = f"{model_file}:build"
    onnx_path = work / "scale.onnx"
    bare_path = work / "bare.onnx"
    external = weights_gb > 2.0
    cli = [py, "-m", "onnxtax"]
    stage_cmds = {
        "export": (cli + ["export", spec, "-i", f"x:batch,{WIDTH}", "-o", str(onnx_path)],
                   [py, "-c", BARE_EXPORT, str(model_file), str(bare_path), "1" if external else "0"]),
        "parity": (cli + ["parity", spec, str(onnx_path)],
                   [py, "-c", BARE_PARITY, str(model_file), str(onnx_path)]),
        "localize": (cli + ["parity", f"{model_file}:build_wrong", str(onnx_path), "--localize"],
                     [py, "-c", BARE_PARITY, str(model_file), str(onnx_path)]),
        "lint-ops": (cli + ["lint-ops", str(onnx_path)], [py, "-c", BARE_LOAD, str(onnx_path)]),
        "verify": (cli + ["verify", str(onnx_path)], None),
        "bench": (cli + ["bench", spec, str(onnx_path), "--batch-sizes", "1", "--min-time", "0.3", "--warmup", "2",
                         "--no-cold-start"], [py, "-c", BARE_PARITY, str(model_file), str(onnx_path)]),
    }
    print(f"model: {args.layers} x Linear({WIDTH}, {WIDTH}) = {weights_gb:.2f} GB of FP32 weights "
          f"({'external data' if external else 'inside the .onnx'}); {args.reps} repetition(s)")
    if not onnx_path.exists() and "export" not in stages:
        print("  exporting once first ...")
        wall, rss, rc = run(stage_cmds["export"][0], env)
        if rc:
            return 1
    results: dict[str, dict] = {}
    for stage in stages:
        tool_cmd, bare_cmd = stage_cmds[stage]
        if stage == "verify":
            files = [str(onnx_path)] + [str(p) for p in work.glob("scale.onnx.data")]
            bare_cmd = [py, "-c", BARE_VERIFY, *files]
        tool, bare = [], []
        for rep in range(args.reps):
            order = [("tool", tool_cmd), ("bare", bare_cmd)] if rep % 2 == 0 else [("bare", bare_cmd), ("tool", tool_cmd)]
            for kind, cmd in order:
                wall, rss, rc = run(cmd, env, expect=1 if (stage, kind) == ("localize", "tool") else 0)
                (tool if kind == "tool" else bare).append((wall, rss, rc))
                print(f"  {stage:9s} {kind:4s} rep {rep}: {wall:7.1f} s  {rss:6.2f} GB  exit {rc}", flush=True)
        tw, tr = [t[0] for t in tool], [t[1] for t in tool]
        bw, br = [b[0] for b in bare], [b[1] for b in bare]
        results[stage] = {
            "tool": {"wall_s": stats(tw), "peak_rss_gb": stats(tr), "exit": [t[2] for t in tool]},
            "bare": {"wall_s": stats(bw), "peak_rss_gb": stats(br), "exit": [b[2] for b in bare]},
            "wall_ratio": statistics.median(tw) / statistics.median(bw),
            "rss_ratio": statistics.median(tr) / statistics.median(br),
            "rss_x_weights": statistics.median(tr) / weights_gb,
            "bare_rss_x_weights": statistics.median(br) / weights_gb,
        }
    print()
    print(f"{'stage':9s} {'onnxtax s (min/med/max)':>25s} {'bare s':>8s} {'wall x':>7s} "
          f"{'onnxtax GB':>11s} {'bare GB':>8s} {'RSS x':>6s} {'x weights':>10s} {'bare x w':>9s}")
    for stage, r in results.items():
        t, b = r["tool"], r["bare"]
        print(f"{stage:9s} {'/'.join(f'{v:.1f}' for v in t['wall_s']):>25s} {b['wall_s'][1]:8.1f} "
              f"{r['wall_ratio']:7.2f} {t['peak_rss_gb'][1]:11.2f} {b['peak_rss_gb'][1]:8.2f} {r['rss_ratio']:6.2f} "
              f"{r['rss_x_weights']:10.2f} {r['bare_rss_x_weights']:9.2f}")
    if args.json:
        args.json.write_text(json.dumps({"layers": args.layers, "weights_gb": weights_gb, "reps": args.reps,
                                         "stages": results}, indent=2))
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
