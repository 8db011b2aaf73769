"""The folder a hostile user works in, shared by tests/cli/test_hostile_*.py: a model file, the
artifact exported from one of its models, data files (good, NaN, inf), files of the wrong kind
and folders named like files. Its path has spaces and non-ASCII letters, as users' paths do.

`snapshot()` records every file and folder under a path (size, mtime, inode) so a test can
assert that a refused command changed nothing and left nothing behind."""

from __future__ import annotations

import os
import shutil
import textwrap
from functools import lru_cache
from pathlib import Path

import numpy as np

MODELS = '''
import torch
from torch import nn


class MLP(nn.Module):
    """The model the artifact m.onnx is exported from: one output."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, x):
        return self.net(x)


class BNNet(nn.Module):
    """Another model with the same input: three outputs, other parameters."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x):
        h = self.bn(self.lin(x))
        return h, h.sum(1), h.mean(1)


class Running(nn.Module):
    """Updates a buffer in forward: each call answers from the ones before it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 1)
        self.register_buffer("running", torch.zeros(1))

    def forward(self, x):
        self.running.mul_(0.9).add_(x.mean())
        return self.lin(x) + self.running


class Rewrites(nn.Module):
    """Writes its weight in forward with the same values: stateless in effect."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 1)

    def forward(self, x):
        with torch.no_grad():
            self.lin.weight.mul_(1.0)
        return self.lin(x)
'''

# `Running` as it was exported: the same class name and tensors, a forward that keeps no state
FROZEN_RUNNING = '''
import torch
from torch import nn


class Running(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 1)
        self.register_buffer("running", torch.zeros(1))

    def forward(self, x):
        return self.lin(x) + self.running
'''

CONFIG = '''
exporter = "torchscript"
output_dir = "onnx"
[parity]
providers = ["cpu"]
samples = 1
[models.m]
spec = "../models.py:MLP"
inputs = ["x:batch,4"]
'''

ROWS = 20
HOLES = (3, 7)  # the rows of data/holes.npz with NaN or inf


def make_project(root: Path, *, running: bool = False) -> Path:
    """Write the project under `root / "my models ü"` and export m.onnx (MLP); with `running`,
    running.onnx too (the stateless `Running` the stateful one claims to be)."""
    from onnxtax.export import export_model

    root = root / "my models ü"
    (root / "data").mkdir(parents=True)
    (root / "models.py").write_text(textwrap.dedent(MODELS), encoding="utf-8")
    assert export_model(f"{root / 'models.py'}:MLP", root / "m.onnx", ["x:batch,4"], exporter="torchscript")
    if running:
        (root / "frozen").mkdir()
        (root / "frozen" / "running.py").write_text(textwrap.dedent(FROZEN_RUNNING), encoding="utf-8")
        assert export_model(f"{root / 'frozen' / 'running.py'}:Running", root / "running.onnx", ["x:batch,4"],
                            exporter="torchscript")
    (root / "bare").mkdir()  # an artifact onnxtax did not write: no manifest
    shutil.copy(root / "m.onnx", root / "bare" / "m.onnx")

    rng = np.random.default_rng(0)
    x = rng.standard_normal((ROWS, 4)).astype(np.float32)
    np.savez(root / "data" / "eval.npz", x=x)
    np.savez(root / "data" / "cal.npz", x=rng.standard_normal((ROWS, 4)).astype(np.float32))
    np.savez(root / "data" / "nan.npz", x=np.full((ROWS, 4), np.nan, np.float32))  # every row NaN
    holes = x.copy()
    holes[HOLES[0], 1] = np.inf
    holes[HOLES[1]] = np.nan
    np.savez(root / "data" / "holes.npz", x=holes)
    np.save(root / "data" / "one.npy", x)
    (root / "notes.txt").write_text("rows of the evaluation set, see the wiki\n", encoding="utf-8")
    (root / "folder.npz").mkdir()
    (root / "folder.onnx").mkdir()
    (root / "ci").mkdir()
    (root / "ci" / "onnxtax.toml").write_text(textwrap.dedent(CONFIG), encoding="utf-8")
    return root


def snapshot(*roots: Path) -> dict:
    """Every path under `roots` (hidden ones too, links not followed): its kind, size, mtime and inode."""
    out = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                path = Path(folder) / name
                st = path.lstat()
                out[str(path)] = (st.st_mode >> 12, st.st_size, st.st_mtime_ns, st.st_ino)
    return out


@lru_cache(maxsize=1)
def _click_group():
    import typer.main

    from onnxtax.cli import app

    return typer.main.get_command(app)


def run(*args, cwd=None, env=None):
    """`onnxtax ARGS` in this process (tests.conftest.run_in_process), with the app's click group
    built once: typer's CliRunner builds it on every call, ~65 ms of a refusal that takes 10."""
    from unittest import mock

    from tests.conftest import run_in_process

    with mock.patch("typer.testing._get_command", lambda app: _click_group()):
        return run_in_process(*args, cwd=cwd, env=env)
