"""Honesty check for `onnxtax serve-bench`: how repeatable is its load within the SLO, and how far is
each path from its bare floor?

For two models, the fraud MLP (examples/fraud_detector.py, x: [batch, 128]) and a transformer-sized
encoder (examples/text_classifier.py: 11.2 M parameters, seq 32), exported once:
  - `run_serve_bench` RUNS times (default 3), alternating with the floors: per path, the highest
    offered load within the SLO (one policy: max batch B, max wait W), its p99 and the host's RSS;
  - the bare floor of each path: the same model call written directly against torch, onnxruntime and
    onnxruntime-node at batch B, in a fresh process pinned to the serving core, no onnxtax in it, no
    socket, no batcher, no generator: closed-loop rows/s for --floor-time seconds. It is the most any
    server of that runtime could sustain on that core at batch B; serve-bench's figure is what an
    open-loop server with a latency SLO sustains. Their ratio is the share serving keeps.
Prints min / median / max and the spread (max-min over median) of the load within the SLO across
runs; the target is +-10%. `others`: the most of the serving core that other processes of the machine
took during any level of the runs (a shared machine shows here: its spread is not the tool's).
`CPU/1k`: the host's CPU time per 1,000 rows at its load within the SLO, against the bare loop's
own CPU time per 1,000 rows: the serving work per row, which other processes on the machine do not
change the way they change the load.

    .venv/bin/python benchmarks/serve_floor.py [--runs 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = {
    "fraud": {"spec": f"{ROOT / 'examples' / 'fraud_detector.py'}:FraudDetector", "inputs": ["x:batch,128"],
              "dims": {}, "ranges": {}, "slo": "p99=20ms", "max_batch": 32, "max_wait_ms": 2.0,
              "start_rate": 1000.0, "duration_s": 1.5},
    "text": {"spec": f"{ROOT / 'examples' / 'text_classifier.py'}:build",
             "inputs": ["input_ids:[batch,seq]:int64", "attention_mask:[batch,seq]:int64"],
             "dims": {"seq": 32}, "ranges": {"input_ids": "0:30522", "attention_mask": "1:2"},
             "slo": "p99=100ms", "max_batch": 8, "max_wait_ms": 5.0, "start_rate": 50.0, "duration_s": 3.0},
}

TORCH_FLOOR = r"""
import sys, time, importlib.util, torch
path, name, batch, seconds, shapes = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
torch.set_num_threads(1)
spec = importlib.util.spec_from_file_location("m", path); mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
obj = getattr(mod, name); model = obj() if isinstance(obj, type) or callable(obj) else obj
model.eval()
args = []
for item in shapes.split(";"):
    kind, dims = item.split(":"); dims = [batch] + [int(d) for d in dims.split(",") if d]
    args.append(torch.randn(dims) if kind == "f" else torch.ones(dims, dtype=torch.int64))
with torch.inference_mode():
    for _ in range(20): model(*args)
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        model(*args); n += 1
print(n * batch / (time.perf_counter() - t0), (time.process_time() - c0) * 1e6 / (n * batch))
"""

ORT_FLOOR = r"""
import sys, time, numpy as np, onnxruntime as ort
onnx, batch, seconds, shapes = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
s = ort.InferenceSession(onnx, so, providers=["CPUExecutionProvider"])
feeds = {}
for i, item in zip(s.get_inputs(), shapes.split(";")):
    kind, dims = item.split(":"); dims = [batch] + [int(d) for d in dims.split(",") if d]
    feeds[i.name] = np.random.default_rng(0).standard_normal(dims).astype(np.float32) if kind == "f" \
        else np.ones(dims, dtype=np.int64)
for _ in range(20): s.run(None, feeds)
n, t0, c0 = 0, time.perf_counter(), time.process_time()
while time.perf_counter() - t0 < seconds:
    s.run(None, feeds); n += 1
print(n * batch / (time.perf_counter() - t0), (time.process_time() - c0) * 1e6 / (n * batch))
"""

NODE_FLOOR = r"""
const ort = require('onnxruntime-node');
const [onnx, batch, seconds, shapes] = [process.argv[1], +process.argv[2], +process.argv[3], process.argv[4]];
(async () => {
  const s = await ort.InferenceSession.create(onnx, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  const feeds = {};
  shapes.split(';').forEach((item, k) => {
    const [kind, d] = item.split(':');
    const dims = [batch, ...d.split(',').filter((x) => x).map(Number)];
    const n = dims.reduce((a, b) => a * b, 1);
    feeds[s.inputNames[k]] = kind === 'f' ? new ort.Tensor('float32', Float32Array.from({ length: n }, () => Math.random()), dims)
      : new ort.Tensor('int64', new BigInt64Array(n).fill(1n), dims);
  });
  for (let i = 0; i < 20; i++) await s.run(feeds);
  let n = 0; const t0 = performance.now(); const c0 = process.cpuUsage();
  while (performance.now() - t0 < seconds * 1000) { await s.run(feeds); n++; }
  const c = process.cpuUsage(c0);
  console.log(n * batch / ((performance.now() - t0) / 1000), (c.user + c.system) / 1000 * 1000 / (n * batch));
})();
"""


def floors(name: str, cfg: dict, onnx: Path, seconds: float, core: int, node_env) -> dict[str, tuple[float, float]]:
    """(rows/s, CPU ms per 1,000 rows) of the bare loop per runtime at the policy's max batch, pinned to
    the serving core: its CPU time is the process's own, so a shared machine lowers the rows/s only."""
    shapes = ";".join(("i:" if ":int64" in text else "f:") + ",".join(
        str(cfg["dims"].get(d, d)) for d in text.split(":")[1].strip("[]").split(",")[1:]) for text in cfg["inputs"])
    path, _, obj = cfg["spec"].rpartition(":")
    batch = str(cfg["max_batch"])
    pin = ["taskset", "-c", str(core)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no onnxtax in the bare loops
    runs = {"eager": pin + [sys.executable, "-c", TORCH_FLOOR, path, obj, batch, str(seconds), shapes],
            "ort": pin + [sys.executable, "-c", ORT_FLOOR, str(onnx), batch, str(seconds), shapes],
            "node": pin + [node_env.node, "-e", NODE_FLOOR, str(onnx), batch, str(seconds), shapes]}
    out = {}
    for path_id, cmd in runs.items():
        extra = {"NODE_PATH": str(node_env.node_path)} if path_id == "node" else {}
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd="/", env=dict(env, **extra), timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"{name} {path_id} floor failed: {proc.stderr.strip()[-400:]}")
        rate, cpu = proc.stdout.strip().splitlines()[-1].split()
        out[path_id] = (float(rate), float(cpu))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", default="fraud,text")
    parser.add_argument("--floor-time", type=float, default=3.0)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()

    from onnxtax.export import export_model
    from onnxtax.serve import run_serve_bench
    from onnxtax.serve.hosts import split_cores
    from onnxtax.serve.node_env import ensure_node_env

    node_env = ensure_node_env()
    server_cores, _, _ = split_cores(None)
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            cfg = MODELS[name]
            onnx = Path(tmp) / f"{name}.onnx"
            ranges = {k: tuple(float(x) for x in v.split(":")) for k, v in cfg["ranges"].items()}
            assert export_model(cfg["spec"], onnx, cfg["inputs"], dims=cfg["dims"] or {}, ranges=ranges)
            rows: dict = {"serve": {p: [] for p in ("eager", "ort", "node")},
                          "p99": {p: [] for p in ("eager", "ort", "node")},
                          "rss": {p: [] for p in ("eager", "ort", "node")},
                          "others": {p: [] for p in ("eager", "ort", "node")},
                          "cpu": {p: [] for p in ("eager", "ort", "node")},
                          "floor_cpu": {p: [] for p in ("eager", "ort", "node")},
                          "floor": {p: [] for p in ("eager", "ort", "node")}}
            for run in range(args.runs):
                print(f"{name}: run {run + 1} of {args.runs}", file=sys.stderr, flush=True)
                report = run_serve_bench(cfg["spec"], onnx, None, slo=cfg["slo"], max_batch=[cfg["max_batch"]],
                                         max_wait_ms=[cfg["max_wait_ms"]], start_rate=cfg["start_rate"],
                                         duration_s=cfg["duration_s"], refine=4, cold_start_runs=1,
                                         generator_floor=False, samples=1, request_dims=cfg["dims"],
                                         ranges=ranges, seed=run)
                for p in report.paths:
                    level = p.best.at_slo if p.best else None
                    rows["serve"][p.id].append(p.qps_at_slo or 0.0)
                    rows["p99"][p.id].append(level.latency_ms["p99"] if level else None)
                    rows["rss"][p.id].append(level.rss_mb if level else None)
                    rows["cpu"][p.id].append(level.cpu_ms_per_1k if level else None)
                    # what other processes took of the serving core over the whole curve (a shared machine)
                    busy = [lv.other_cores for c in p.curves for lv in c.levels if lv.other_cores is not None]
                    rows["others"][p.id].append(max(busy) if busy else None)
                for path_id, (rate, cpu) in floors(name, cfg, onnx, args.floor_time, server_cores[0],
                                                   node_env).items():
                    rows["floor"][path_id].append(rate)
                    rows["floor_cpu"][path_id].append(cpu)
            results[name] = rows

    print(f"\nload within the SLO over {args.runs} runs (one policy per model) vs the bare floor at that batch")
    print(f"{'model':6} {'path':6} {'SLO':10} {'rows/s at SLO (min/median/max)':>32} {'spread':>8} "
          f"{'bare floor':>11} {'share':>6} {'p99 at SLO':>10} {'RSS':>7} {'others':>7} {'CPU/1k':>9} "
          f"{'bare CPU/1k':>11}")
    for name, rows in results.items():
        for p in ("eager", "ort", "node"):
            serve, floor = rows["serve"][p], rows["floor"][p]
            med = statistics.median(serve)
            spread = (max(serve) - min(serve)) / med if med else float("nan")
            p99 = statistics.median([v for v in rows["p99"][p] if v is not None] or [float("nan")])
            rss = statistics.median([v for v in rows["rss"][p] if v is not None] or [float("nan")])
            others = max([v for v in rows["others"][p] if v is not None] or [float("nan")])
            cpu = statistics.median([v for v in rows["cpu"][p] if v is not None] or [float("nan")])
            bare_cpu = statistics.median(rows["floor_cpu"][p])
            print(f"{name:6} {p:6} {MODELS[name]['slo']:10} {min(serve):>10,.0f} /{med:>9,.0f} /{max(serve):>9,.0f} "
                  f"{spread:>7.0%} {statistics.median(floor):>11,.0f} {med / statistics.median(floor):>6.0%} "
                  f"{p99:>8.2f} ms {rss:>4.0f} MB {others:>7.2f} {cpu:>6.1f} ms {bare_cpu:>8.1f} ms")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
