"""Writes the data segments the fraud example's quantization is approved on (examples/data/*.npz).

Two kinds of transactions: ordinary ones (128 features ~ N(0, 1)) and a 5% tail whose first
8 features (amounts, velocities) are 25x larger. Labels are the FP32 model's decisions with 3%
of them flipped, standing in for reviewed outcomes.

    python examples/fraud_data.py            # then: make demo, or the commands in docs/quantize.md

Files (arrays keyed by the model input name `x`, rows on axis 0):
  fraud_calibration.npz                 512 ordinary rows: calibration on ordinary traffic only
  fraud_calibration_representative.npz  512 rows, 5% of them tail rows: calibration like production
  fraud_ordinary.npz, fraud_tail.npz     the evaluation segments (1900 and 100 rows, with `label`)
  fraud_eval.npz                         both in one file, `segment` names each row's segment
"""

from pathlib import Path

import numpy as np
import torch

from fraud_detector import FraudDetector

OUT = Path(__file__).resolve().parent / "data"


def transactions(rng: np.random.Generator, rows: int, tail: bool) -> np.ndarray:
    x = rng.standard_normal((rows, 128)).astype(np.float32)
    if tail:
        x[:, :8] *= 25
    return x


def main() -> None:
    OUT.mkdir(exist_ok=True)
    rng = np.random.default_rng(2026)
    model = FraudDetector().eval()
    np.savez(OUT / "fraud_calibration.npz", x=transactions(rng, 512, tail=False))
    mixed = np.concatenate([transactions(rng, 486, tail=False), transactions(rng, 26, tail=True)])
    np.savez(OUT / "fraud_calibration_representative.npz", x=mixed[rng.permutation(len(mixed))])
    segments = {"ordinary": transactions(rng, 1900, tail=False), "tail": transactions(rng, 100, tail=True)}
    labels = {}
    for name, x in segments.items():
        with torch.inference_mode():
            decision = (model(torch.from_numpy(x)).numpy()[:, 0] > 0.5).astype(np.int64)
        flip = rng.random(len(decision)) < 0.03
        labels[name] = np.where(flip, 1 - decision, decision)
        np.savez(OUT / f"fraud_{name}.npz", x=x, label=labels[name])
    np.savez(OUT / "fraud_eval.npz", x=np.concatenate(list(segments.values())),
             label=np.concatenate(list(labels.values())),
             segment=np.array([name for name, x in segments.items() for _ in range(len(x))]))
    for path in sorted(OUT.glob("fraud_*.npz")):
        print(f"wrote {path.relative_to(OUT.parent.parent) if OUT.parent.parent in path.parents else path}")


if __name__ == "__main__":
    main()
