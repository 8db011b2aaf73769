"""The models of benchmarks/parity_headroom.py, as SPECs: `headroom_models.py:FAMILY_W{width}_D{depth}`
builds that model (seeded), `..._bump{L}` the same model with layer L's weight changed by a relative
1e-3 (each element times 1 +/- 1e-3, random signs): what parity must catch.

Families: mlp (Linear+ReLU, x:[batch, W]); res3d (pre-norm residual MLP blocks on x:[batch, seq, W],
hidden 4W: the shape of every transformer's linear layers); transformer (pre-norm blocks, multi-head
attention with 64-wide heads and a 4W feed-forward, x:[batch, seq, W]); conv (Conv3x3+BatchNorm+ReLU,
W channels, x:[batch, 3, 32, 32], mean-pooled into a 10-way head). Weights are initialised so the
signal keeps its scale with depth (Kaiming for ReLU, BatchNorm statistics drawn), as trained models do;
a model whose deep layers no longer reach the output could not show any change in them.
"""

from __future__ import annotations

import re

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, w: int, d: int):
        super().__init__()
        self.net = nn.Sequential(*[m for _ in range(d) for m in (nn.Linear(w, w), nn.ReLU())])
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.uniform_(m.bias, -0.1, 0.1)

    def forward(self, x):
        return self.net(x)


class ResBlock(nn.Module):
    def __init__(self, w: int):
        super().__init__()
        self.norm = nn.LayerNorm(w)
        self.up, self.down = nn.Linear(w, 4 * w), nn.Linear(4 * w, w)

    def forward(self, x):
        return x + self.down(torch.relu(self.up(self.norm(x))))


class Res3D(nn.Module):
    def __init__(self, w: int, d: int):
        super().__init__()
        self.blocks = nn.Sequential(*[ResBlock(w) for _ in range(d)])
        self.norm = nn.LayerNorm(w)

    def forward(self, x):
        return self.norm(self.blocks(x))


class Block(nn.Module):
    def __init__(self, w: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(w), nn.LayerNorm(w)
        self.attn = nn.MultiheadAttention(w, max(1, w // 64), batch_first=True)
        self.ff = nn.Sequential(nn.Linear(w, 4 * w), nn.GELU(), nn.Linear(4 * w, w))

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.ff(self.ln2(x))


class Transformer(nn.Module):
    def __init__(self, w: int, d: int):
        super().__init__()
        self.blocks = nn.Sequential(*[Block(w) for _ in range(d)])
        self.norm = nn.LayerNorm(w)

    def forward(self, x):
        return self.norm(self.blocks(x))


class ConvNet(nn.Module):
    def __init__(self, w: int, d: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(d):
            layers += [nn.Conv2d(3 if i == 0 else w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.head = nn.Linear(w, 10)
        for m in self.net:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                nn.init.uniform_(m.weight, 0.8, 1.2)
                nn.init.uniform_(m.bias, -0.1, 0.1)

    def forward(self, x):
        return self.head(self.net(x).mean((2, 3)))


FAMILIES = {"mlp": MLP, "res3d": Res3D, "transformer": Transformer, "conv": ConvNet}
INPUTS = {"mlp": "x:batch,{w}", "res3d": "x:batch,seq,{w}", "transformer": "x:batch,seq,{w}",
          "conv": "x:batch,3,32,32"}
_NAME = re.compile(r"(?P<family>[a-z0-9]+)_W(?P<w>\d+)_D(?P<d>\d+)(?:_bump(?P<layer>\d+))?$")


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """The layers with a weight matrix or kernel, in forward order (what a planted change may hit)."""
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))
            or isinstance(m, nn.MultiheadAttention)]


def build(family: str, w: int, d: int, bump_layer: int | None = None) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = FAMILIES[family](w, d).eval()
    if bump_layer is not None:
        layer = weight_layers(model)[bump_layer]
        weight = layer.in_proj_weight if isinstance(layer, nn.MultiheadAttention) else layer.weight
        g = torch.Generator().manual_seed(1)
        signs = torch.randint(0, 2, weight.shape, generator=g, dtype=torch.float32) * 2 - 1
        with torch.no_grad():
            weight.mul_(1 + 1e-3 * signs)
    return model


def __getattr__(name: str):
    m = _NAME.match(name)
    if m is None or m["family"] not in FAMILIES:
        raise AttributeError(name)
    family, w, d = m["family"], int(m["w"]), int(m["d"])
    layer = int(m["layer"]) if m["layer"] is not None else None
    return lambda: build(family, w, d, layer)
