"""What each onnxtax stage costs on a big model, against the bare tools doing the same work.

Builds, in code (no download), one of three FP32 models (`--model`):

  linear    N x Linear(8192, 8192) on x:batch,8192 (4 layers: 1.07 GB of weights, stored inside the
            .onnx; 10 layers: 2.68 GB, stored as external data); the exporter writes Gemm over the
            parameters as they are
  residual  N pre-norm residual MLP blocks (LayerNorm, Linear(1024, 4096), GELU, Linear(4096, 1024))
            on x:batch,seq,1024 (24 blocks: 806 MB), the shape of every transformer's linear layers:
            the dynamo exporter writes MatMul over each weight transposed and folded into a new
            initializer (`val_N`, [in, out])
  bert      transformers' BertModel from a config (hidden 1024, 16 heads, intermediate 4096,
            vocabulary 30522, random init), N layers (12: 737 MB), on input_ids and attention_mask
            [batch, seq]; outputs last_hidden_state and pooler_output

exports it once with `onnxtax export`, then runs every stage and its bare floor each in a fresh process:

  export    `onnxtax export`           vs torch.onnx.export(dynamo=True) + onnx.checker full check by path
  parity    `onnxtax parity` (defaults: batch 1, 4, 7 (x seq 1, 4, 7) x 3 samples, CPU)
                                       vs build the eager model, one ORT session, the same runs through both
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

`--root DIR` runs the onnxtax of another checkout (e.g. `git archive REV | tar -x -C DIR`);
`--before DIR` runs that checkout's onnxtax too, interleaved with this one's and the bare floor's
(the order rotates each repetition): the same stage before and after a change, on the same files,
under the same load.

    .venv/bin/python benchmarks/scale.py [--model linear] [--layers 4] [--reps 1] [--stages export,parity,...]
                                         [--root DIR] [--before DIR] [--workdir DIR] [--json PATH]
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

# Every model file has build(), build_wrong() (the middle layer's weight x 1.01), example() (the
# export's arguments), dynamic_shapes() and feeds(batch, seq, k) (the bare parity floor's arrays).
LINEAR = '''
import numpy as np
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
    # the exported model with the middle layer's weight changed: what --localize must find
    model = build()
    with torch.no_grad():
        model.layers[LAYERS // 2].weight.mul_(1.01)
    return model


def example():
    return (torch.randn(3, WIDTH),)


def dynamic_shapes():
    return ({{0: torch.export.Dim("batch")}},)


def feeds(batch, seq, k):
    rng = np.random.default_rng([0, k])
    return {{"x": (rng.standard_normal((batch, WIDTH)) * (1.0, 0.1, 10.0)[k]).astype(np.float32)}}
'''

RESIDUAL = '''
import numpy as np
import torch

LAYERS = {layers}
D = 1024


class Block(torch.nn.Module):
    # pre-norm residual MLP: x + fc2(gelu(fc1(norm(x)))), a transformer's feed-forward half

    def __init__(self):
        super().__init__()
        self.norm = torch.nn.LayerNorm(D)
        self.fc1 = torch.nn.Linear(D, 4 * D)
        self.fc2 = torch.nn.Linear(4 * D, D)

    def forward(self, x):
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(x))))


class Residual(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList(Block() for _ in range(LAYERS))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def build():
    torch.manual_seed(0)
    with torch.no_grad():
        model = Residual()
    return model.eval()


def build_wrong():
    model = build()
    with torch.no_grad():
        model.blocks[LAYERS // 2].fc1.weight.mul_(1.01)
    return model


def example():
    return (torch.randn(2, 8, D),)


def dynamic_shapes():
    return ({{0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")}},)


def feeds(batch, seq, k):
    rng = np.random.default_rng([0, k])
    return {{"x": (rng.standard_normal((batch, seq, D)) * (1.0, 0.1, 10.0)[k]).astype(np.float32)}}
'''

BERT = '''
import numpy as np
import torch
from transformers import BertConfig, BertModel

LAYERS = {layers}
VOCAB = 30522


class Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        config = BertConfig(vocab_size=VOCAB, hidden_size=1024, num_hidden_layers=LAYERS, num_attention_heads=16,
                            intermediate_size=4096, max_position_embeddings=512)
        self.bert = BertModel(config)

    def forward(self, input_ids, attention_mask):
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state, out.pooler_output


def build():
    torch.manual_seed(0)
    with torch.no_grad():
        model = Encoder()
    return model.eval()


def build_wrong():
    model = build()
    with torch.no_grad():
        model.bert.encoder.layer[LAYERS // 2].intermediate.dense.weight.mul_(1.01)
    return model


def example():
    return (torch.randint(0, VOCAB, (2, 8)), torch.ones(2, 8, dtype=torch.long))


def dynamic_shapes():
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=512)
    return ({{0: batch, 1: seq}}, {{0: batch, 1: seq}})


def feeds(batch, seq, k):
    rng = np.random.default_rng([0, k])
    mask = np.ones((batch, seq), np.int64)
    mask[:, seq - seq // 4:] = 0  # padding at the end of each row, never a whole row
    return {{"input_ids": rng.integers(0, VOCAB, (batch, seq)).astype(np.int64), "attention_mask": mask}}
'''

MODELS = {"linear": LINEAR, "residual": RESIDUAL, "bert": BERT}
INPUTS = {"linear": [f"x:batch,{WIDTH}"], "residual": ["x:batch,seq,1024"],
          "bert": ["input_ids:[batch,seq]:int64", "attention_mask:[batch,seq]:int64"]}
DEFAULT_LAYERS = {"linear": 4, "residual": 24, "bert": 12}


def weights_bytes(kind: str, layers: int) -> int:
    """The model's parameters' bytes (FP32), counted from its shapes."""
    if kind == "linear":
        return layers * (WIDTH * WIDTH + WIDTH) * 4
    d, i = 1024, 4096
    if kind == "residual":
        return layers * (2 * d + d * i + i + i * d + d) * 4
    per_layer = 4 * (d * d + d) + 2 * d + d * i + i + i * d + d + 2 * d
    embeddings = (30522 + 512 + 2) * d + 2 * d
    return (layers * per_layer + embeddings + d * d + d) * 4


BARE_EXPORT = r'''
import importlib.util, sys
import onnx, torch
spec = importlib.util.spec_from_file_location("scale_model", sys.argv[1])
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
model = mod.build()
external = sys.argv[3] == "1"
program = torch.onnx.export(model, mod.example(), dynamo=True, dynamic_shapes=mod.dynamic_shapes(), opset_version=18)
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
names = [i.name for i in session.get_inputs()]
ok = True
plan = [(b, s) for b in (1, 4, 7) for s in ((1, 4, 7) if len(session.get_inputs()[0].shape) > 1 and
                                             any(isinstance(d, str) for d in session.get_inputs()[0].shape[1:2])
                                             else (1,))]
for batch, seq in plan:  # parity's default plan: batch 1, 4, 7 (x seq 1, 4, 7 when seq is dynamic)
    for k in range(3):
        feeds = mod.feeds(batch, seq, k)
        with torch.inference_mode():
            ref = model(*(torch.from_numpy(feeds[n]) for n in names))
        ref = ref if isinstance(ref, tuple) else (ref,)
        got = session.run(None, feeds)
        ok &= all(bool(np.allclose(g, r.numpy(), rtol=1e-4, atol=1e-4)) for g, r in zip(got, ref))
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


def run(cmd: list[str], env: dict | None = None, expect: int = 0, cwd: Path | None = None) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in GB, exit code) of one child process; another exit code than
    `expect` prints the child's last lines. The page cache's dirty pages are flushed first
    (os.sync, untimed): otherwise the gigabytes the previous process wrote throttle this one's
    writes, and export times measure the order of the runs."""
    gc.collect()
    os.sync()
    t0 = time.perf_counter()
    # cwd: `python -m onnxtax` puts the current folder first on sys.path, before PYTHONPATH's checkout
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd)
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
    ap.add_argument("--model", choices=sorted(MODELS), default="linear")
    ap.add_argument("--layers", type=int, default=None,
                    help="linear: Linear(8192, 8192) layers (4 = 1.07 GB, 10 = 2.68 GB); residual: blocks "
                         "(24 = 806 MB); bert: encoder layers (12 = 737 MB)")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--workdir", type=Path, default=None, help="keep files here (default: a temporary folder)")
    ap.add_argument("--root", type=Path, default=ROOT, help="the onnxtax checkout to run (default: this one)")
    ap.add_argument("--before", type=Path, default=None,
                    help="another checkout whose onnxtax runs each stage too, interleaved with --root's: before/after")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    kind = args.model
    layers = args.layers if args.layers is not None else DEFAULT_LAYERS[kind]
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    py = sys.executable
    def env_of(root: Path) -> dict:
        return dict(os.environ, PYTHONPATH=str(root.resolve()) + os.pathsep + os.environ.get("PYTHONPATH", ""))

    env = env_of(args.root)
    weights_gb = weights_bytes(kind, layers) / 1e9
    tmp = tempfile.TemporaryDirectory(prefix="onnxtax-scale-") if args.workdir is None else None
    work = Path(tmp.name) if tmp else args.workdir
    work.mkdir(parents=True, exist_ok=True)
    model_file = work / f"{'scale' if kind == 'linear' else kind}_{layers}.py"
    model_file.write_text(MODELS[kind].format(layers=layers, width=WIDTH))
    spec = f"{model_file}:build"
    inputs = [a for spec_text in INPUTS[kind] for a in ("-i", spec_text)]
    onnx_path = work / ("scale.onnx" if kind == "linear" else f"{kind}_{layers}.onnx")
    bare_path = work / "bare.onnx"
    external = weights_gb > 2.0
    cli = [py, "-m", "onnxtax"]
    stage_cmds = {
        "export": (cli + ["export", spec, *inputs, "-o", str(onnx_path)],
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
    what = {"linear": f"{layers} x Linear({WIDTH}, {WIDTH})", "residual": f"{layers} residual MLP blocks (d=1024)",
            "bert": f"BertModel, {layers} layers, hidden 1024"}[kind]
    print(f"model: {what} = {weights_gb:.2f} GB of FP32 weights "
          f"({'external data' if external else 'inside the .onnx'}); {args.reps} repetition(s)")
    if not onnx_path.exists() and "export" not in stages:
        print("  exporting once first ...")
        wall, rss, rc = run(stage_cmds["export"][0], env, cwd=work)
        if rc:
            return 1
    results: dict[str, dict] = {}
    for stage in stages:
        tool_cmd, bare_cmd = stage_cmds[stage]
        if stage == "verify":
            files = [str(onnx_path)] + [str(p) for p in work.glob(onnx_path.name + ".data")]
            bare_cmd = [py, "-c", BARE_VERIFY, *files]
        runs: dict[str, list] = {"tool": [], "bare": [], "before": []}
        kinds = [("tool", tool_cmd, env), ("bare", bare_cmd, env)]
        if args.before is not None:
            kinds.insert(1, ("before", tool_cmd, env_of(args.before)))
        for rep in range(args.reps):
            # rotated each repetition: a load change on a shared host hits every kind alike
            order = kinds[rep % len(kinds):] + kinds[:rep % len(kinds)]
            for which, cmd, cmd_env in order:
                expect = 1 if stage == "localize" and which != "bare" else 0
                wall, rss, rc = run(cmd, cmd_env, expect=expect, cwd=work)
                runs[which].append((wall, rss, rc))
                print(f"  {stage:9s} {which:6s} rep {rep}: {wall:7.1f} s  {rss:6.2f} GB  exit {rc}", flush=True)
        tool, bare = runs["tool"], runs["bare"]
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
        if runs["before"]:
            vw, vr = [v[0] for v in runs["before"]], [v[1] for v in runs["before"]]
            results[stage]["before"] = {"root": str(args.before), "wall_s": stats(vw), "peak_rss_gb": stats(vr),
                                        "exit": [v[2] for v in runs["before"]],
                                        "rss_x_weights": statistics.median(vr) / weights_gb,
                                        "wall_ratio": statistics.median(vw) / statistics.median(bw)}
    print()
    print(f"{'stage':9s} {'onnxtax s (min/med/max)':>25s} {'bare s':>8s} {'wall x':>7s} "
          f"{'onnxtax GB':>11s} {'bare GB':>8s} {'RSS x':>6s} {'x weights':>10s} {'bare x w':>9s}")
    for stage, r in results.items():
        t, b = r["tool"], r["bare"]
        print(f"{stage:9s} {'/'.join(f'{v:.1f}' for v in t['wall_s']):>25s} {b['wall_s'][1]:8.1f} "
              f"{r['wall_ratio']:7.2f} {t['peak_rss_gb'][1]:11.2f} {b['peak_rss_gb'][1]:8.2f} {r['rss_ratio']:6.2f} "
              f"{r['rss_x_weights']:10.2f} {r['bare_rss_x_weights']:9.2f}")
        if "before" in r:
            v = r["before"]
            print(f"{'  before':9s} {'/'.join(f'{x:.1f}' for x in v['wall_s']):>25s} {b['wall_s'][1]:8.1f} "
                  f"{v['wall_ratio']:7.2f} {v['peak_rss_gb'][1]:11.2f} {b['peak_rss_gb'][1]:8.2f} "
                  f"{v['peak_rss_gb'][1] / b['peak_rss_gb'][1]:6.2f} {v['rss_x_weights']:10.2f} "
                  f"{r['bare_rss_x_weights']:9.2f}")
    if args.json:
        args.json.write_text(json.dumps({"model": kind, "layers": layers, "root": str(args.root),
                                         "weights_gb": weights_gb, "reps": args.reps,
                                         "stages": results}, indent=2))
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
