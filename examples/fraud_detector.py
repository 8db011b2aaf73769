"""Fraud scoring: 128 transaction features -> fraud probability, dynamic batch.

The classic online-serving model: tiny, called once per request at batch 1, where
PyTorch's per-call overhead dominates. Weights are seeded so every load is identical
(a real project loads its checkpoint here).

    onnxtax export examples/fraud_detector.py:FraudDetector -o out/fraud.onnx --input x:batch,128
"""

import torch
from torch import nn


class FraudDetector(nn.Module):
    def __init__(self, features: int = 128):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.net = nn.Sequential(
                nn.Linear(features, 64), nn.ReLU(),
                nn.Linear(64, 32), nn.ReLU(),
                nn.Linear(32, 1),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))
