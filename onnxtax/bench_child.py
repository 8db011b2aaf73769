"""Cold-start probes: run by `onnxtax.bench` in a fresh interpreter (`python -c`), one
process per measurement, so that imports, model construction and the first call are
paid exactly as a new serving process pays them.

Only the standard library is imported at module level: whatever the probe needs
(torch, or onnxruntime + numpy) is imported inside it and timed.

Protocol: argv[1] is a JSON config; the probe prints one line `RESULT_MARKER + JSON`
on stdout with monotonic timestamps (CLOCK_MONOTONIC is system-wide on Linux, so the
parent can subtract its own spawn time) and the peak resident set size.
"""

from __future__ import annotations

import json
import sys
import time

from onnxtax.defaults import ORT_OPT_LEVELS  # imports nothing: the timed imports stay the probe's own

RESULT_MARKER = "ONNXTAX-COLD-START "

# The whole `-c` program. The first timestamp is taken before anything else runs, so
# the parent can tell interpreter start-up from the work itself.
STUB = ("import time; _t0 = time.monotonic_ns()\n"
        "from onnxtax.bench_child import main\n"
        "main(_t0)\n")


def peak_rss_kb() -> tuple[int, str]:
    """Peak resident set size of this process in KiB, and where it was read."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]), "VmHWM"
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak // 1024 if sys.platform == "darwin" else peak), "ru_maxrss"


def _torch_probe(cfg: dict, stamps: dict) -> None:
    stamps["import_start"] = time.monotonic_ns()
    import torch

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    stamps["import_end"] = time.monotonic_ns()
    from onnxtax.loading import load_model

    model = load_model(cfg["spec"]).module
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
    stamps["import_start"] = time.monotonic_ns()
    import numpy as np
    import onnxruntime as ort

    stamps["import_end"] = time.monotonic_ns()
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_OPT_LEVELS[cfg["opt_level"]])
    if cfg.get("threads"):
        so.intra_op_num_threads = int(cfg["threads"])
        so.inter_op_num_threads = 1
    so.log_severity_level = 3
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


def main(t0_ns: int) -> None:
    """Entry point of the `-c` stub: run the probe named in argv[1], print the result line."""
    cfg = json.loads(sys.argv[1])
    stamps = {"interpreter_ready": t0_ns}
    probe = _torch_probe if cfg["kind"] == "torch" else _ort_probe
    probe(cfg, stamps)
    rss_kb, rss_source = peak_rss_kb()
    sys.stdout.write(RESULT_MARKER + json.dumps({"stamps_ns": stamps, "peak_rss_kb": rss_kb,
                                                  "rss_source": rss_source}) + "\n")
    sys.stdout.flush()
