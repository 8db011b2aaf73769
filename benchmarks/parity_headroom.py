"""Headroom of parity's rule on what people ship: how close correct exports come to failing, and
whether a 1e-3 relative change of one layer's weight is still caught.

Per model x exporter (dynamo, torchscript) x provider (cpu; openvino from the second virtualenv,
$ONNXTAX_OPENVINO_PYTHON): `export_model` with defaults, then `check_parity` with default flags on
the model (must pass: its worst tolerance ratio |a-b| / limit is the headroom, <= 0.5 is the
target) and on the same model with one layer's weight changed by a relative 1e-3 (must fail).
Each parity run is a fresh process (the openvino one in the other virtualenv), so peak memory is
that run's. Models: benchmarks/headroom_models.py (MLPs, pre-norm residual MLPs on 3-D input,
pre-norm Transformer blocks, conv nets; widths 64-16384, depths 1-48) and the examples with the
tiny transformers configs (GPT-2, CLIP text, BERT) the rule was first measured on.

    .venv/bin/python benchmarks/parity_headroom.py [--preset quick|full] [--only SUBSTRING ...]
        [--exporters dynamo,torchscript] [--providers cpu,openvino] [--json PATH]

The table in docs/parity.md comes from `--preset full` (about an hour on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "examples"
TOK = ["input_ids:[batch,seq]:int64", "attention_mask:[batch,seq]:int64"]

HF = '''
import torch
from torch import nn


def _seeded(build):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build().eval()


class GPT2(nn.Module):
    def __init__(self):
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel
        cfg = GPT2Config(vocab_size=99, n_positions=64, n_embd=32, n_layer=2, n_head=4, use_cache=False)
        self.m = _seeded(lambda: GPT2LMHeadModel(cfg))

    def forward(self, input_ids, attention_mask):
        return self.m(input_ids=input_ids, attention_mask=attention_mask).logits


class CLIPText(nn.Module):
    def __init__(self):
        super().__init__()
        from transformers import CLIPTextConfig, CLIPTextModel
        cfg = CLIPTextConfig(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                             num_attention_heads=4, max_position_embeddings=64)
        self.m = _seeded(lambda: CLIPTextModel(cfg))

    def forward(self, input_ids, attention_mask):
        out = self.m(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state, out.pooler_output


class Encoder4(nn.Module):
    """The worst drift measured before: 4-layer Transformer encoder, d=256, float input."""
    def __init__(self):
        super().__init__()
        layer = lambda: nn.TransformerEncoderLayer(256, 8, 512, dropout=0.0, batch_first=True)
        self.m = _seeded(lambda: nn.TransformerEncoder(layer(), 4, enable_nested_tensor=False))

    def forward(self, x):
        return self.m(x)


class BiGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.m = _seeded(lambda: nn.GRU(32, 256, num_layers=2, bidirectional=True, batch_first=True))

    def forward(self, x):
        return self.m(x)[0]


class Bert(nn.Module):
    def __init__(self):
        super().__init__()
        from transformers import BertConfig, BertModel
        cfg = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=37, max_position_embeddings=64)
        self.m = _seeded(lambda: BertModel(cfg))

    def forward(self, input_ids, attention_mask):
        out = self.m(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state, out.pooler_output
'''


GRID = {
    "quick": [("mlp", 64, 1), ("mlp", 1024, 4), ("res3d", 256, 4), ("transformer", 64, 2), ("conv", 16, 4)],
    "full": [("mlp", 64, 1), ("mlp", 64, 48), ("mlp", 256, 8), ("mlp", 1024, 1), ("mlp", 1024, 48),
             ("mlp", 4096, 4), ("mlp", 4096, 16), ("mlp", 8192, 4), ("mlp", 16384, 1),
             ("res3d", 64, 1), ("res3d", 256, 48), ("res3d", 1024, 24), ("res3d", 2048, 4), ("res3d", 4096, 1),
             ("transformer", 64, 1), ("transformer", 64, 48), ("transformer", 256, 12), ("transformer", 512, 24),
             ("transformer", 1024, 8), ("transformer", 2048, 2),
             ("conv", 16, 1), ("conv", 16, 48), ("conv", 64, 16), ("conv", 256, 8), ("conv", 512, 4)],
}
SMALL_BYTES = 4 * 2**20  # models up to this size get a planted change in their first, middle and last layer


def examples(hf_file: Path) -> dict[str, tuple[str, list[str]]]:
    """The models the fixed rule was first measured on (the examples and tiny transformers)."""
    return {
        "fraud": (f"{EX / 'fraud_detector.py'}:FraudDetector", ["x:batch,128"]),
        "image": (f"{EX / 'image_classifier.py'}:ImageClassifier", ["images:batch,3,32,32"]),
        "tagger": (f"{EX / 'token_classifier.py'}:build", TOK),
        "gpt2": (f"{hf_file}:GPT2", TOK),
        "clip-text": (f"{hf_file}:CLIPText", TOK),
        "bert": (f"{hf_file}:Bert", TOK),
        "encoder4-d256": (f"{hf_file}:Encoder4", ["x:batch,seq,256"]),
        "bigru-256": (f"{hf_file}:BiGRU", ["x:batch,seq,32"]),
    }


def worker(spec: str, onnx: str, provider: str) -> None:
    """One parity run in this process; prints its summary as one JSON line."""
    sys.path.insert(0, str(ROOT))
    from onnxtax.parity import check_parity

    report = check_parity(spec, onnx, providers=[provider])
    stats = [c.stats for c in report.cases if c.stats is not None and c.stats.samples]
    ratios = [s.worst.tolerance_ratio for s in stats if s.worst is not None]
    rule = report.rule
    print(json.dumps({
        "passed": report.passed, "worst_ratio": max(ratios, default=None),
        "min_cosine": min((s.cosine_min for s in stats if s.cosine_min is not None), default=None),
        "noise": dict(rule.noise) if rule else {}, "noise_decides": any(s.noise_decides for s in stats),
        "noise_s": round(report.noise_s, 3), "parity_s": round(report.duration_s, 2),
        "peak_over_weights": report.memory.to_dict().get("peak_over_weights") if report.memory else None,
        "failure": report.failures[0][:300] if report.failures else None}), flush=True)


def run_worker(python: str, spec: str, onnx: Path, provider: str) -> dict:
    proc = subprocess.run([python, str(Path(__file__).resolve()), "--worker", spec, str(onnx), provider],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:300]}
    return json.loads(lines[-1])


def measure(name: str, spec: str, inputs: list[str], exporter: str, providers: dict[str, str], folder: Path,
            bumps: list[str], weights_mb: float | None) -> list[dict]:
    """Export once; per provider one parity run on the model and one per planted change."""
    from onnxtax.export import export_model

    out = folder / f"{name}.{exporter}.onnx"
    t0 = time.perf_counter()
    result = export_model(spec, out, inputs, exporter=exporter)
    export_s = round(time.perf_counter() - t0, 1)
    if not result:
        row = {"model": name, "exporter": exporter, "export_error": result.error}
        print(json.dumps(row), flush=True)
        return [row]
    rows = []
    for provider, python in providers.items():
        row = {"model": name, "exporter": exporter, "provider": provider, "export_s": export_s,
               "weights_mb": weights_mb,
               **run_worker(python, spec, out, provider)}
        row["caught"] = []
        for bump in bumps:
            planted = run_worker(python, bump, out, provider)
            row["caught"].append(planted.get("passed") is False)
            row.setdefault("planted_worst_ratio", []).append(planted.get("worst_ratio"))
        rows.append(row)
        print(json.dumps(row), flush=True)
    for f in folder.glob(f"{name}.{exporter}*"):
        f.unlink()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(GRID), default="quick")
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--exporters", default="dynamo,torchscript")
    parser.add_argument("--providers", default="cpu,openvino")
    parser.add_argument("--no-examples", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--worker", nargs=3, metavar=("SPEC", "ONNX", "PROVIDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return 0
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import headroom_models as hm

    providers = {}
    for p in args.providers.split(","):
        if p == "openvino":
            ov = os.environ.get("ONNXTAX_OPENVINO_PYTHON") or str(ROOT / ".venv-openvino" / "bin" / "python")
            if Path(ov).exists():
                providers[p] = ov
            else:
                print(f"openvino: no second virtualenv at {ov} (make venv-openvino): skipped")
        else:
            providers[p] = sys.executable
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        hf_file = folder / "hf_models.py"
        hf_file.write_text(textwrap.dedent(HF))
        todo = []
        for family, w, d in GRID[args.preset]:
            name = f"{family}_W{w}_D{d}"
            spec = f"{ROOT / 'benchmarks' / 'headroom_models.py'}:{name}"
            model = hm.build(family, w, d)
            n_layers = len(hm.weight_layers(model))
            size = sum(p.numel() * p.element_size() for p in model.parameters())
            del model
            layers = sorted({0, n_layers // 2, n_layers - 1}) if size <= SMALL_BYTES else [n_layers // 2]
            todo.append((name, spec, [hm.INPUTS[family].format(w=w)], [f"{spec}_bump{i}" for i in layers],
                         round(size / 2**20, 1)))
        if not args.no_examples:
            todo += [(n, s, i, [], None) for n, (s, i) in examples(hf_file).items()]
        for name, spec, inputs, bumps, size_mb in todo:
            if args.only and not any(o in name for o in args.only):
                continue
            for exporter in args.exporters.split(","):
                rows += measure(name, spec, inputs, exporter, providers, folder, bumps, size_mb)
    ok = [r for r in rows if "worst_ratio" in r and r["worst_ratio"] is not None]
    if ok:
        worst = max(ok, key=lambda r: r["worst_ratio"])
        print(f"worst tolerance ratio over {len(ok)} correct runs: {worst['worst_ratio']:.3g} ({worst['model']} "
              f"{worst['exporter']} {worst['provider']}); passed {sum(r['passed'] for r in ok)}/{len(ok)}")
    planted = [c for r in rows for c in r.get("caught", [])]
    print(f"planted 1e-3 weight changes caught: {sum(planted)}/{len(planted)}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    good = all(r.get("passed") for r in rows) and all(planted)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
