"""Tiny models for the export tests, in a real file so specs like `file.py:NAME` point at them
and error messages can name their lines."""

import torch
from torch import nn


class TwoInputs(nn.Module):
    """ids + mask sharing batch and seq; returns a dict."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(50, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, ids, mask):
        h = self.embed(ids) * mask.unsqueeze(-1).to(torch.float32)
        return {"logits": self.head(h), "pooled": h.mean(dim=1)}


class Reflect(nn.Module):
    """Reflect padding: the dynamo exporter cannot down-convert it below opset 18."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")

    def forward(self, x):
        return self.conv(x)


class IntShape(nn.Module):
    def forward(self, x):
        n = int(x.shape[0])
        return x + torch.arange(n, dtype=x.dtype).unsqueeze(1)


class ReshapeToInt(nn.Module):
    def forward(self, x):
        return x.reshape(int(x.shape[0]), -1) * 2


class DataDependent(nn.Module):
    def forward(self, x):
        if x.mean() > 0:  # the line the error must name
            return x * 2
        return x - 1


@torch.library.custom_op("exporttest::myop", mutates_args=())
def myop(x: torch.Tensor) -> torch.Tensor:
    return x.clone() * 3


@myop.register_fake
def _(x):
    return torch.empty_like(x)


class CustomOp(nn.Module):
    def forward(self, x):
        return myop(x) + 1


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x)


def make_linear():
    return Linear()


linear_instance = Linear()
NOT_A_MODEL = 42


class NeedsArgs(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(width, 2)

    def forward(self, x):
        return self.fc(x)


class TransformerTS(nn.Module):
    """nn.TransformerEncoder: the TorchScript exporter bakes the sequence length into a Reshape."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)

    def forward(self, x):
        return self.encoder(x)


class ShapeBranch(nn.Module):
    """torch.export specialises this to batch >= 2; the ONNX file cannot say so."""

    def forward(self, x):
        if x.shape[0] > 1:
            return x * 2
        return x - 1


class GRUTagger(nn.Module):
    """The dynamo exporter labels the output's sequence dim with its export-time size."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.gru = nn.GRU(8, 6, batch_first=True, bidirectional=True)
        self.out = nn.Linear(12, 5)

    def forward(self, x):
        h, _ = self.gru(x)
        return self.out(h)


class ConvKernel5(nn.Module):
    """A conv over a sequence: seq=1 (and up to 4) fails in PyTorch itself; batch=1 is fine."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(4, 6, 5)

    def forward(self, x):
        return self.conv(x)


class EvenPairs(nn.Module):
    """Sums neighbouring pairs: runs only at even sequence lengths."""

    def forward(self, x):
        b, s, f = x.shape
        return x.reshape(b, s // 2, 2, f).sum(2)


class OnlyTen(nn.Module):
    """Declared dynamic, but runs only at length 10."""

    def forward(self, x):
        return x.reshape(x.shape[0], 5, 2)
