"""The tiny models several test modules share, in a real file so that a SPEC
(`tests/models/tiny.py:NAME`) points at them and messages can name their lines.
Models one test needs stay inside that test; a model two modules need lives here."""

import torch
from torch import nn


class Tiny(nn.Module):
    """A 16-feature MLP with one sigmoid output: the smallest model every stage can run."""

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, x):
        return torch.sigmoid(self.net(x))


class SeqMean(nn.Module):
    """No weights: (batch, seq, features) -> (batch, features)."""

    def forward(self, x):
        return x.mean(dim=1) * 2.0


class Table(nn.Module):
    """Adds the first `batch` rows of a 32-row table: torch.export assumes batch <= 32, and ONNX
    Runtime cannot run the exported graph at batch 33 or more (eager returns x unchanged there)."""

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.table = nn.Parameter(torch.randn(32, 16))

    def forward(self, x):
        if x.shape[0] > 32:
            return x
        return x + self.table[: x.shape[0]]


FILE = __file__
MODELS = {"Tiny": Tiny, "SeqMean": SeqMean, "Table": Table}


def spec(name: str) -> str:
    """The SPEC string of a registered model."""
    assert name in MODELS, f"no tiny model {name}; registered: {', '.join(MODELS)}"
    return f"{FILE}:{name}"
