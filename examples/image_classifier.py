"""A small CNN image classifier: [batch, 3, 32, 32] images -> 10 class logits, dynamic batch.

    onnxtax export examples/image_classifier.py:ImageClassifier -o out/cnn.onnx --input images:batch,3,32,32
"""

import torch
from torch import nn


class ImageClassifier(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.features = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                nn.AdaptiveAvgPool2d(1),
            )
            self.head = nn.Linear(32, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(images), 1))
