"""Cold-start probes: run by `onnxtax.bench.run` in a fresh interpreter through
`onnxtax.core.child.run_in_child`, one process per measurement, so that imports, model
construction and the first call are paid exactly as a new serving process pays them.

Only the standard library is imported at module level: whatever the probe needs
(torch, or onnxruntime + numpy) is imported inside it and timed. The probe returns
monotonic timestamps (the child runner adds the interpreter's start) and the peak
resident set size.
"""

from __future__ import annotations

import time


def peak_rss_kb() -> tuple[int, str]:
    """Peak resident set size of this process in KiB, and where it was read (onnxtax.core.memory)."""
    from onnxtax.core.memory import peak_rss_bytes

    peak, source = peak_rss_bytes()
    return peak // 1024, source


def _torch_probe(cfg: dict, stamps: dict) -> None:
    stamps["import_start"] = time.monotonic_ns()
    import torch

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    stamps["import_end"] = time.monotonic_ns()
    from onnxtax.core.loading import check_inputs_match, load_model
    from onnxtax.core.specs import InputSpec

    model = load_model(cfg["spec"]).module
    names = [InputSpec(spec["name"], tuple(spec["shape"])) for spec in cfg["inputs"]]
    model = check_inputs_match(model, names, cfg["spec"])  # keyword-only inputs by name, as the parent does
    stamps["load_end"] = time.monotonic_ns()
    args = []
    for spec in cfg["inputs"]:
        shape, dtype = spec["shape"], getattr(torch, spec["torch_dtype"])
        if spec["kind"] == "bool":
            args.append(torch.rand(shape) < 0.5)
        elif spec["kind"] == "int":
            args.append(torch.randint(spec["low"], spec["high"], shape, dtype=dtype))
        else:
            args.append(torch.randn(shape).to(dtype))
    with torch.inference_mode():
        model(*args)
    stamps["first_result"] = time.monotonic_ns()


def _ort_probe(cfg: dict, stamps: dict) -> None:
    # onnxtax's session options, imported before the clock starts: a serving process has its own
    from onnxtax.core.providers import session_options

    stamps["import_start"] = time.monotonic_ns()
    import numpy as np
    import onnxruntime as ort

    stamps["import_end"] = time.monotonic_ns()
    so = session_options(opt_level=cfg["opt_level"], threads=cfg.get("threads"), record_placement=False)
    session = ort.InferenceSession(cfg["onnx"], so, providers=[cfg["provider"]],
                                   provider_options=[cfg.get("provider_options") or {}])
    stamps["load_end"] = time.monotonic_ns()
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in cfg["inputs"]:
        shape = spec["shape"]
        if spec["kind"] == "bool":
            feeds[spec["name"]] = rng.random(shape) < 0.5
        elif spec["kind"] == "int":
            feeds[spec["name"]] = rng.integers(spec["low"], spec["high"], size=shape, dtype=spec["numpy_dtype"])
        else:
            feeds[spec["name"]] = rng.standard_normal(shape).astype(spec["numpy_dtype"])
    session.run(None, feeds)
    stamps["first_result"] = time.monotonic_ns()


def cold_start(cfg: dict) -> dict:
    """Child-runner target: run the probe `cfg["kind"]` names ("torch" or "ort")."""
    stamps: dict[str, int] = {}
    probe = _torch_probe if cfg["kind"] == "torch" else _ort_probe
    probe(cfg, stamps)
    rss_kb, rss_source = peak_rss_kb()
    return {"stamps_ns": stamps, "peak_rss_kb": rss_kb, "rss_source": rss_source}
