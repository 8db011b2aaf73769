"""Export's smoke run: the written file in a real ORT CPU session at two sizes of every dynamic
axis (and on each --data file), compared with eager PyTorch at the same inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onnxtax.core.errors import CheckFailed, InputSpecError
from onnxtax.core.inputs import flatten_outputs, torch_tensors
from onnxtax.core.progress import Progress
from onnxtax.core.specs import InputSpec, SampleRecipe, ValueRange, make_inputs


# The smoke run compares ORT with eager with parity's criterion (onnxtax.core.compare: atol scaled
# by the output's RMS, cosine gate), 10x looser: it is a shape-level gate that also catches
# gross numeric breakage (a frozen branch, a specialised size), on one sample per size.
# `onnxtax parity` is the precise numeric gate.
SMOKE_RTOL = 1e-3

SMOKE_ATOL = 1e-4


def torch_inputs(specs: list[InputSpec], sizes: dict[str, int], seed: int = 0,
                  ranges: dict[str, ValueRange] | None = None, arrays: dict | None = None) -> tuple:
    if arrays is None:
        arrays = make_inputs(specs, sizes, SampleRecipe(seed=seed, ranges=dict(ranges or {})))
    return torch_tensors(specs, arrays)


def eager_outputs(model, args: tuple) -> list[tuple[str, Any]]:
    import torch

    with torch.inference_mode():
        return flatten_outputs(model(*args))


def _smoke_candidates(sizes: dict[str, int]) -> list[dict[str, list[int]]]:
    """Two trials, each with the sizes to try per dynamic axis, in order of preference:
    1 first (the online-serving batch, where 0/1 specialisation bites), then 2*size+1;
    the later candidates serve models that reject those sizes (a kernel longer than 1,
    an even length). The export-time size itself is never a candidate."""
    if not sizes:
        return [{}]
    small = {s: [1, 2, v + 1, v + 2] for s, v in sizes.items()}
    large = {s: [2 * v + 1, 2 * v, 2 * v + 2, 3 * v, 4 * v + 1] for s, v in sizes.items()}
    return [{s: [c for c in dict.fromkeys(cands) if c != sizes[s]] for s, cands in trial.items()}
            for trial in (small, large)]


def _eager_at(model, specs: list[InputSpec], trial: dict[str, int], ranges: dict[str, ValueRange]):
    """(inputs, eager outputs) at these sizes, or None when the model itself rejects them."""
    args = torch_inputs(specs, trial, seed=1, ranges=ranges)
    try:
        return args, eager_outputs(model, args)
    except Exception:  # noqa: BLE001 - any error from the user's forward() at this size
        return None


def _pick_trial(model, specs: list[InputSpec], sizes: dict[str, int], candidates: dict[str, list[int]],
                taken: dict[str, int], ranges: dict[str, ValueRange]):
    """Sizes at which eager PyTorch runs: every axis at its first candidate when the model
    accepts that; else axis by axis from the export-time sizes (known to run), each axis
    taking its first candidate the model accepts. `taken` holds the sizes the previous
    trial used, so that each axis runs at two different values.
    Returns (sizes, notes, inputs, eager outputs)."""
    options = {s: [c for c in cands if c != taken.get(s)] for s, cands in candidates.items()}
    first = {s: opts[0] for s, opts in options.items()}
    ran = _eager_at(model, specs, first, ranges)
    if ran is not None:
        return first, [], *ran
    trial = dict(sizes)
    for sym, opts in options.items():
        for value in opts:
            if _eager_at(model, specs, {**trial, sym: value}, ranges) is not None:
                trial[sym] = value
                break
    notes = [f"{sym}={value} fails in PyTorch itself" for sym, value in first.items() if trial[sym] != value]
    ran = _eager_at(model, specs, trial, ranges)
    if ran is None:  # axes that run one at a time but not together: the export sizes run
        trial, ran = dict(sizes), _eager_at(model, specs, sizes, ranges)
        notes = [f"{', '.join(f'{k}={v}' for k, v in first.items())} fails in PyTorch itself"]
    assert ran is not None, "the export-time sizes ran before export"
    return trial, notes, *ran


def _compare_smoke(ref, got, noise_rel: float | None = None, computed_in: str | None = None) -> str | None:
    """Parity's criterion (onnxtax.core.compare), at the smoke run's looser floors; with the
    model's own noise when it was measured (after a first failure: a float16 model, a wide layer),
    k by the dtype the model computed the output in (a bfloat16 output is compared as float32)."""
    from onnxtax.core.compare import compare_arrays, noise_factor_for

    exact = ref.dtype.kind not in "fc"
    stats = compare_arrays(got, ref, 0.0 if exact else SMOKE_RTOL, 0.0 if exact else SMOKE_ATOL,
                           noise_rel=None if exact else noise_rel,
                           noise_factor=noise_factor_for(computed_in or ref.dtype.name, None))
    if stats:
        return None
    if stats.problems:
        if any(p.startswith("shape") for p in stats.problems):
            return f"shape {tuple(got.shape)} from ONNX Runtime, {tuple(ref.shape)} from PyTorch"
        return "; ".join(stats.problems)
    if exact:
        return "integer outputs differ"
    if stats.nan_inf_mismatch:
        return "NaN/Inf in different positions"
    if stats.outside:
        return (f"values differ from PyTorch (max abs diff {stats.max_abs_diff:.3g}, {stats.outside} of "
                f"{stats.elements} elements outside {stats.atol_effective:.3g} + {stats.rtol_effective:.3g}*|b|: "
                f"{stats.tolerance_text()})")
    return f"values differ from PyTorch (cosine similarity {stats.cosine_min:.4g})"


def _smoke_noise(model, args, ref) -> list:
    """The model's own rounding noise per output at these inputs (onnxtax.core.noise)."""
    from onnxtax.core.noise import float64_outputs, relative_noise

    exact, _ = float64_outputs(model, list(args))
    return relative_noise([t.float().numpy() if str(t.dtype) == "torch.bfloat16" else t.numpy() for _, t in ref],
                          exact)


def _mismatch_hint(label: str, trial: dict, sizes: dict) -> str:
    """What to do about values that differ, saying only what is known: which sizes differ from
    export's, and where the evidence is (a frozen branch or a baked size is lint's and parity's
    finding to make, not a guess here)."""
    moved = [f"{k}={v} (exported at {sizes[k]})" for k, v in trial.items() if k in sizes and v != sizes[k]]
    where = f"at {', '.join(moved)}" if moved else f"at {label}"
    return (f"the graph computes other values than the model {where}: `onnxtax lint-ops --source` lists "
            "data-dependent branches and baked sizes in forward(), `onnxtax parity --localize` finds the first "
            "module that differs; if an input's values are outside the model's domain, declare it with "
            "--range NAME=LOW:HIGH or --data")


def size_trials(model, specs: list[InputSpec], sizes: dict[str, int], ranges: dict[str, ValueRange]) -> list[tuple]:
    """The smoke run's eager side: (label, sizes, notes, inputs, eager outputs) at two values of
    every dynamic axis. Export computes it in a thread while the weights are being written
    (the disk is then the bottleneck, not the CPU)."""
    out, taken = [], {}
    for candidates in _smoke_candidates(sizes):
        trial, notes, args, ref = _pick_trial(model, specs, sizes, candidates, taken, ranges)
        taken = dict(trial)
        out.append((", ".join(f"{k}={v}" for k, v in trial.items()) or "static shapes", trial, notes, args, ref))
    return out


def smoke_run(path: Path, model, specs: list[InputSpec], sizes: dict[str, int], output_names: list[str],
               progress: Progress, ranges: dict[str, ValueRange] | None = None, data: list | None = None,
               written: Any = None, eager_trials: list[tuple] | None = None) -> tuple[list[str], dict, dict[str, str]]:
    """Load in a real ORT CPU session and run at two values of every dynamic axis (`eager_trials`,
    computed here when not given), and on each --data file, comparing shapes and values with
    eager PyTorch at the same inputs (parity's criterion, looser).
    Returns (details, observed output shapes, constant outputs -> why)."""
    import numpy as np

    from onnxtax.core.compare import Constancy
    from onnxtax.core.providers import open_session, ort_error_summary
    from onnxtax.core.sharing import share_weights

    ranges = ranges or {}
    # the weights the module holds are the ones just written (compared byte for byte): ORT uses
    # them in place instead of loading a second copy of the file
    try:
        shared = share_weights(path, model, written)
    except (OSError, ValueError):  # a proto the wire walker cannot read: load the file
        shared = None
    session = (shared.open(record_placement=False) if shared is not None and shared.names
               else open_session(path, record_placement=False))
    ort_inputs = [i.name for i in session.get_inputs()]
    details: list[str] = []
    observed: dict[str, list] = {}
    constancy = {name: Constancy() for name in output_names}
    seen: dict[str, set[int]] = {s: set() for s in sizes}

    def trials():
        for label, trial, notes, args, ref in eager_trials or size_trials(model, specs, sizes, ranges):
            for sym, value in trial.items():
                seen[sym].add(value)
            yield label, trial, notes, args, ref
        for file, arrays, file_sizes in data or []:
            args = torch_inputs(specs, file_sizes, arrays=arrays)
            try:
                ref = eager_outputs(model, args)
            except Exception as exc:  # noqa: BLE001 - the user's forward() on the user's data
                raise InputSpecError(f"--data {file}: the model raises {type(exc).__name__}: "
                                     f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
                                     "fix the file, or check it with the model in Python first") from exc
            yield f"{file.name}", file_sizes, [], args, ref

    for label, trial, notes, args, ref in trials():
        progress(f"running ONNX Runtime at {label}")
        feeds = {}
        for name, spec, t in zip(ort_inputs, specs, args):
            arr = t.float().numpy() if spec.dtype == "bfloat16" else t.numpy()
            feeds[name] = arr
        try:
            got = session.run(None, feeds)
        except Exception as exc:  # noqa: BLE001 - ORT's own exception types
            line, node = ort_error_summary(exc)
            raise CheckFailed(
                f"ONNX Runtime fails at {label}: {line}" + (f" (node {node})" if node else ""),
                "a size from export time is baked into the graph: look for int(x.shape[i]), .item(), "
                "or Python loops over sizes in forward(); the dynamo exporter (--exporter dynamo) keeps "
                "more of them symbolic") from exc
        if len(got) != len(ref):
            raise CheckFailed(f"ONNX Runtime returns {len(got)} outputs, PyTorch {len(ref)}",
                              "check the model's output structure")
        noise: list | None = None
        for oi, (name, (_, ref_t), arr) in enumerate(zip(output_names, ref, got)):
            ref_np = ref_t.float().numpy() if str(ref_t.dtype) == "torch.bfloat16" else ref_t.numpy()
            problem = _compare_smoke(ref_np, np.asarray(arr))
            if problem and ref_np.dtype.kind in "fc":  # is it the model's own rounding? measured, once per size
                noise = _smoke_noise(model, args, ref) if noise is None else noise
                problem = _compare_smoke(ref_np, np.asarray(arr), noise[oi] if oi < len(noise) else None,
                                         str(ref_t.dtype))
            if problem:
                raise CheckFailed(f"output '{name}' at {label}: {problem}", _mismatch_hint(label, trial, sizes))
            constancy[name].add(label, ref_np)
            observed.setdefault(name, []).append((trial, tuple(np.asarray(arr).shape)))
        details.append(f"{label}: ok" + (f" ({'; '.join(notes)})" if notes else ""))
    stuck = [sym for sym, values in seen.items() if values <= {sizes[sym]}]
    if stuck:
        raise InputSpecError(
            f"dynamic axis {', '.join(repr(s) for s in stuck)} could not be run at any size but the export-time "
            f"one ({', '.join(f'{s}={sizes[s]}' for s in stuck)}): PyTorch itself fails at every other size tried",
            "declare the axis static in --input, or set an example size the model accepts with --dim")
    constant = {name: c.describe() for name, c in constancy.items() if c.constant}
    return details, observed, constant
