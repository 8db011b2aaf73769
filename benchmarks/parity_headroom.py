"""False-alarm headroom of parity's criterion: how close do correct exports come to failing?

Exports each model below with `export_model` (dynamo, default flags except the inputs), runs
`check_parity` with default flags, and prints per model the worst tolerance ratio
(|a-b| / (atol*rms + rtol*|b|); 1 fails) and the lowest cosine over every shape, sample and
output. The criterion is sound only if correct exports stay well below 1 (and a wrong model
far above: see tests/test_verdicts.py). Models: the three examples, the tests' tiny models,
tiny random transformers configs (GPT-2, CLIP text, BERT) with input_ids + attention_mask, and the
two models with the largest FP32 drift measured before (4-layer Transformer encoder d=256, 2-layer
bidirectional GRU hidden 256; float inputs at scales 1, 0.1 and 10).

    .venv/bin/python benchmarks/parity_headroom.py [--only NAME ...] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
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


def cases(hf_file: Path) -> dict[str, tuple[str, list[str]]]:
    tiny = ROOT / "tests" / "models" / "tiny.py"
    out = {
        "fraud": (f"{EX / 'fraud_detector.py'}:FraudDetector", ["x:batch,128"]),
        "image": (f"{EX / 'image_classifier.py'}:ImageClassifier", ["images:batch,3,32,32"]),
        "tagger": (f"{EX / 'token_classifier.py'}:build", TOK),
        "export_cases.TwoInputs": (f"{ROOT / 'tests' / 'models' / 'export_cases.py'}:TwoInputs",
                                   ["ids:[batch,seq]:int64", "mask:[batch,seq]:int64"]),
        "gpt2": (f"{hf_file}:GPT2", TOK),
        "clip-text": (f"{hf_file}:CLIPText", TOK),
        "bert": (f"{hf_file}:Bert", TOK),
        "encoder4-d256": (f"{hf_file}:Encoder4", ["x:batch,seq,256"]),
        "bigru-256": (f"{hf_file}:BiGRU", ["x:batch,seq,32"]),
    }
    if tiny.is_file():
        out["tiny.Tiny"] = (f"{tiny}:Tiny", ["x:batch,16"])
        out["tiny.SeqMean"] = (f"{tiny}:SeqMean", ["x:batch,seq,8"])
    return out


def measure(name: str, spec: str, inputs: list[str], folder: Path) -> dict:
    from onnxtax.export import export_model
    from onnxtax.parity import check_parity

    out = folder / f"{name}.onnx"
    t0 = time.perf_counter()
    result = export_model(spec, out, inputs)
    if not result:
        return {"model": name, "export": result.error}
    report = check_parity(spec, out)
    stats = [c.stats for c in report.cases if c.stats is not None and c.stats.samples]
    ratios = [s.worst.tolerance_ratio for s in stats if s.worst is not None]
    cosines = [s.cosine_min for s in stats if s.cosine_min is not None]
    return {"model": name, "passed": report.passed, "cases": len(report.cases),
            "worst_ratio": max(ratios, default=None), "min_cosine": min(cosines, default=None),
            "shapes": [s.label for s in report.shapes], "failures": report.failures[:3],
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--json")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        hf_file = folder / "hf_models.py"
        hf_file.write_text(textwrap.dedent(HF))
        for name, (spec, inputs) in cases(hf_file).items():
            if args.only and name not in args.only:
                continue
            row = measure(name, spec, inputs, folder)
            rows.append(row)
            print(json.dumps(row), flush=True)
    ratios = [r["worst_ratio"] for r in rows if r.get("worst_ratio") is not None]
    print(f"worst tolerance ratio over {len(ratios)} models: {max(ratios):.3g}" if ratios else "no ratios")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0 if all(r.get("passed") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
