"""What `parity --localize` costs: time and peak RSS of localising one failing case, against a
bare floor doing the least the same question needs (one eager run and one ONNX Runtime run of
the same sample, with the session built), on the bundled examples and on models of >= 100 nodes.

Each model is exported with the TorchScript exporter (milliseconds, module scopes in node
names), and the initializer of a middle weight is scaled by 1.01 so there is a divergence to
find. Then, for each model and repetition, two fresh child processes (order rotated):
  - floor: import torch + onnxruntime, build the model, open one CPU session, run the sample
    through both;
  - localize: the same, then `onnxtax.parity.localization.localize(...)` on that sample.
A child reports the seconds of its measured part (session + runs, or session + runs +
localize) and its peak RSS (ru_maxrss). Printed: min / median / max per model, the ratios
of the medians, and what was found (module, chunks, compared modules).

    .venv/bin/python benchmarks/localize_cost.py [--reps 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

DEEP = '''
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, x):
        return self.norm(torch.relu(self.linear(x)) + x)


class Deep(nn.Module):
    """48 residual blocks: ~200 ONNX nodes."""
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList([Block(256) for _ in range(48)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x
'''

BERT = '''
import torch
from torch import nn
from transformers import BertConfig, BertModel


class Bert(nn.Module):
    """A 4-layer random BERT (hidden 128): ~550 ONNX nodes."""
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        cfg = BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                         intermediate_size=256, max_position_embeddings=128)
        self.bert = BertModel(cfg).eval()

    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
'''

# name, spec (file:attr), inputs (name, shape, dtype, high), dynamic axes, scope of the weight to change
CASES = [
    ("fraud", f"{ROOT}/examples/fraud_detector.py:FraudDetector", [("x", (64, 128), "float32", None)],
     {"x": {0: "batch"}}, None),
    ("image", f"{ROOT}/examples/image_classifier.py:ImageClassifier", [("images", (8, 3, 32, 32), "float32", None)],
     {"images": {0: "batch"}}, None),
    ("tokens", f"{ROOT}/examples/token_classifier.py:TokenClassifier",
     [("input_ids", (8, 16), "int64", 100), ("attention_mask", (8, 16), "int64", 2)],
     {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}, None),
    ("deep-48", "DEEP:Deep", [("x", (64, 256), "float32", None)], {"x": {0: "batch"}}, None),
    ("bert-4", "BERT:Bert", [("input_ids", (8, 32), "int64", 1000), ("attention_mask", (8, 32), "int64", 2)],
     {"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}}, None),
]

CHILD = r'''
import json, resource, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
mode, spec, onnx_path, inputs = sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
import onnxruntime as ort
import torch
from onnxtax.core import load_model
from onnxtax.core import InputSpec

torch.manual_seed(0)  # the examples initialise at random: the same weights as the exported model
model = load_model(spec).module.eval()
rng = np.random.default_rng(0)
arrays = {n: (rng.integers(0, high, shape) if high else rng.standard_normal(shape)).astype(dtype)
          for n, shape, dtype, high in inputs}
t0 = time.perf_counter()
session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
with torch.inference_mode():
    model(*[torch.from_numpy(arrays[n]) for n, *_ in inputs])
session.run(None, {n: arrays[n] for n, *_ in inputs})
found = None
if mode == "localize":
    from onnxtax.parity import localize
    from onnxtax.core import ProviderRequest

    specs = [InputSpec(n, tuple(shape), dtype) for n, shape, dtype, _ in inputs]
    loc = localize(model, onnx_path, arrays, specs=specs, mapping={n: n for n, *_ in inputs},
                   request=ProviderRequest("CPUExecutionProvider"), rtol=1e-4, atol=1e-5)
    found = {"status": loc.status, "module": loc.module, "chunks": loc.chunks, "compared": loc.compared_modules,
             "peak_chunk_mb": round(loc.peak_chunk_mb, 3)}
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6,
                  "found": found}))
'''


def _export(name: str, spec: str, inputs, axes, out: Path) -> tuple[str, Path, str]:
    """Export with the TorchScript exporter and scale the middle weight initializer by 1.01."""
    import warnings

    import numpy as np
    import onnx
    import torch
    from onnx import numpy_helper

    from onnxtax.parity.intermediates import GraphMap
    from onnxtax.core import load_model

    if spec.startswith(("DEEP:", "BERT:")):
        src = out / f"{name}.py"
        src.write_text(textwrap.dedent(DEEP if spec.startswith("DEEP") else BERT))
        spec = f"{src}:{spec.split(':')[1]}"
    torch.manual_seed(0)  # the children build the model with the same seed
    model = load_model(spec).module.eval()
    rng = np.random.default_rng(1)
    example = tuple(torch.from_numpy((rng.integers(0, high, shape) if high else rng.standard_normal(shape))
                                     .astype(dtype)) for _, shape, dtype, high in inputs)
    path = out / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, str(path), dynamo=False, input_names=[n for n, *_ in inputs],
                          dynamic_axes=axes, opset_version=17)
    graph = GraphMap(path)
    proto = onnx.load(str(path))
    floats = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2]
    target = floats[len(floats) // 2]
    target.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(target) * np.float32(1.01), target.name))
    onnx.save(proto, str(path))
    return spec, path, f"{len(graph.nodes)} nodes, changed {target.name}"


def _child(mode: str, spec: str, path: Path, inputs) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), mode, spec, str(path),
                           json.dumps([[n, list(s), d, h] for n, s, d, h in inputs])],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} child failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mmm(values: list[float]) -> str:
    return f"{min(values):.3g} / {statistics.median(values):.3g} / {max(values):.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec, inputs, axes, _ in CASES:
            spec, path, what = _export(name, spec, inputs, axes, Path(tmp))
            runs: dict[str, list[dict]] = {"floor": [], "localize": []}
            for rep in range(args.reps):
                for mode in (("floor", "localize") if rep % 2 == 0 else ("localize", "floor")):
                    runs[mode].append(_child(mode, spec, path, inputs))
            secs = {m: [r["seconds"] for r in rs] for m, rs in runs.items()}
            rss = {m: [r["rss_mb"] for r in rs] for m, rs in runs.items()}
            row = {"model": name, "graph": what, "found": runs["localize"][0]["found"],
                   "floor_s": secs["floor"], "localize_s": secs["localize"], "floor_rss_mb": rss["floor"],
                   "localize_rss_mb": rss["localize"],
                   "time_ratio": statistics.median(secs["localize"]) / statistics.median(secs["floor"]),
                   "rss_ratio": statistics.median(rss["localize"]) / statistics.median(rss["floor"])}
            results.append(row)
            print(f"{name:9} {what}\n  found: {row['found']}\n"
                  f"  time s  floor {_mmm(secs['floor'])}  localize {_mmm(secs['localize'])}  "
                  f"ratio {row['time_ratio']:.2f}x\n"
                  f"  RSS MB  floor {_mmm(rss['floor'])}  localize {_mmm(rss['localize'])}  "
                  f"ratio {row['rss_ratio']:.2f}x", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"reps": args.reps, "results": results}, indent=2))


if __name__ == "__main__":
    main()
