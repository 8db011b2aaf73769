"""The eager model reading its Linear weights through transposed views: the same outputs? how fast?

Parity shares the weights the dynamo exporter stored transposed (MatMul weights of Linear layers
on 3-D input, `val_N` = W^T) by making each parameter a transposed view of the ONNX session's
array (onnxtax.core.transposed). The values are the parameter's, bit for bit; the layout the
eager GEMMs read is not. This measures what that changes, on the models of benchmarks/scale.py:

- outputs: the model as built (contiguous parameters) and the same model after
  `share_weights(..., transposed=True)`, on the same inputs: how many are bit-identical, and the
  largest difference, also as a fraction of parity's tolerance (1e-5 * rms + 1e-4 * |b|) and next
  to the ONNX Runtime session's own difference from eager on the same inputs;
- speed: one eager forward of each, interleaved, --reps times per shape (min / median / max).

Shapes: parity's default plan for the model (batch 1, 4, 7 x seq 1, 4, 7; BERT: seq 2, 4, 7,
torch.export assumed seq >= 2) and one serving size (batch 8 x seq 128), 3 samples each (values
at scale 1, 0.1 and 10 for float inputs).

    .venv/bin/python benchmarks/transposed_views.py [--model residual] [--layers 24] [--reps 5]
                                                    [--workdir DIR] [--json PATH]

The .onnx comes from `benchmarks/scale.py`'s folder layout (`--workdir`: exported there with
`onnxtax export` when missing). Two copies of the model are in memory (2 x the weights).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import DEFAULT_LAYERS, INPUTS, MODELS, WIDTH  # noqa: E402


def load(model_file: Path):
    spec = importlib.util.spec_from_file_location("views_model", model_file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def shapes_of(kind: str) -> list[tuple[int, int]]:
    seqs = (2, 4, 7) if kind == "bert" else (1, 4, 7)
    return [(b, s) for b in (1, 4, 7) for s in seqs] + [(8, 128)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(m for m in MODELS if m != "linear"), default="residual")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    kind = args.model
    layers = args.layers if args.layers is not None else DEFAULT_LAYERS[kind]
    tmp = tempfile.TemporaryDirectory(prefix="onnxtax-views-") if args.workdir is None else None
    work = Path(tmp.name) if tmp else args.workdir
    work.mkdir(parents=True, exist_ok=True)
    model_file = work / f"{kind}_{layers}.py"
    if not model_file.exists():
        model_file.write_text(MODELS[kind].format(layers=layers, width=WIDTH))
    onnx_path = work / f"{kind}_{layers}.onnx"
    if not onnx_path.exists():
        print(f"exporting {onnx_path.name} ...", flush=True)
        cmd = [sys.executable, "-m", "onnxtax", "export", f"{model_file}:build", "-o", str(onnx_path)]
        cmd += [a for spec in INPUTS[kind] for a in ("-i", spec)]
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)

    import numpy as np
    import torch

    from onnxtax.core.sharing import share_weights

    mod = load(model_file)
    contiguous, viewed = mod.build(), mod.build()
    shared = share_weights(onnx_path, viewed, transposed=True)
    session = shared.open()
    names = [i.name for i in session.get_inputs()]
    print(f"{kind}, {layers} layers: {len(shared.sharing.transposed)} parameters read through transposed views "
          f"({shared.sharing.transposed_bytes / 1e9:.2f} GB); torch threads {torch.get_num_threads()}")

    def forward(model, feeds):
        with torch.inference_mode():
            out = model(*(torch.from_numpy(feeds[n]) for n in names))
        return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]

    rows, times = [], {"contiguous": {}, "views": {}}
    for batch, seq in shapes_of(kind):
        label = f"batch={batch},seq={seq}"
        for k in range(3):
            feeds = mod.feeds(batch, seq, k)
            a, b = forward(contiguous, feeds), forward(viewed, feeds)
            ort = session.run(None, feeds)
            for oi, (x, y, z) in enumerate(zip(a, b, ort)):
                bound = 1e-5 * float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) + 1e-4 * np.abs(x)
                view_diff = np.abs(x.astype(np.float64) - y)
                ort_diff = np.abs(x.astype(np.float64) - z)
                # what parity compares once the weights are shared: ORT against the eager model on views
                bound_views = 1e-5 * float(np.sqrt(np.mean(y.astype(np.float64) ** 2))) + 1e-4 * np.abs(y)
                ort_views = np.abs(y.astype(np.float64) - z)
                rows.append({"shape": label, "sample": k, "output": oi, "rows": batch * seq,
                             "bit_identical": bool(np.array_equal(x, y)),
                             "max_abs_diff": float(view_diff.max()),
                             "of_tolerance": float((view_diff / bound).max()),
                             "ort_max_abs_diff": float(ort_diff.max()),
                             "ort_of_tolerance": float((ort_diff / bound).max()),
                             "ort_vs_views_of_tolerance": float((ort_views / bound_views).max())})
        feeds = mod.feeds(batch, seq, 0)
        for which in ("contiguous", "views"):
            times[which][label] = []
        for _ in range(args.reps):  # interleaved: a load change on the host hits both alike
            for which, model in (("contiguous", contiguous), ("views", viewed)):
                t0 = time.perf_counter()
                forward(model, feeds)
                times[which][label].append(time.perf_counter() - t0)
        c, v = times["contiguous"][label], times["views"][label]
        same = sum(r["bit_identical"] for r in rows if r["shape"] == label)
        total = sum(1 for r in rows if r["shape"] == label)
        worst = max((r for r in rows if r["shape"] == label), key=lambda r: r["of_tolerance"])
        print(f"{label:18s} rows {batch * seq:4d}  bit-identical {same}/{total}  max |diff| "
              f"{worst['max_abs_diff']:.2e} ({worst['of_tolerance']:.3f} of parity's tolerance; ORT vs eager "
              f"{max(r['ort_of_tolerance'] for r in rows if r['shape'] == label):.3f}, ORT vs eager on views "
              f"{max(r['ort_vs_views_of_tolerance'] for r in rows if r['shape'] == label):.3f})  eager ms contiguous "
              f"{'/'.join(f'{x * 1e3:.1f}' for x in (min(c), statistics.median(c), max(c)))}  views "
              f"{'/'.join(f'{x * 1e3:.1f}' for x in (min(v), statistics.median(v), max(v)))}  "
              f"median ratio {statistics.median(v) / statistics.median(c):.3f}", flush=True)
    summary = {"model": kind, "layers": layers, "reps": args.reps, "threads": torch.get_num_threads(),
               "transposed_tensors": len(shared.sharing.transposed),
               "transposed_bytes": shared.sharing.transposed_bytes,
               "bit_identical": sum(r["bit_identical"] for r in rows), "outputs_compared": len(rows),
               "max_of_tolerance": max(r["of_tolerance"] for r in rows),
               "max_ort_of_tolerance": max(r["ort_of_tolerance"] for r in rows),
               "max_ort_vs_views_of_tolerance": max(r["ort_vs_views_of_tolerance"] for r in rows),
               "rows": rows,
               "times_s": {w: {lbl: [min(v), statistics.median(v), max(v)] for lbl, v in t.items()}
                           for w, t in times.items()}}
    print(f"bit-identical: {summary['bit_identical']}/{summary['outputs_compared']} outputs; largest view "
          f"difference {summary['max_of_tolerance']:.3f} of parity's tolerance; ORT vs eager: "
          f"{summary['max_ort_of_tolerance']:.3f} with contiguous parameters, {summary['max_ort_vs_views_of_tolerance']:.3f} "
          "with views")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    del session, shared
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
