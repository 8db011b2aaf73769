"""Runs inside a cached virtualenv that holds only `onnxruntime==V` and numpy: executed by
path (`VENV/bin/python -I runtime_child.py CONFIG.json`), never imported there, so it may
import nothing but the standard library, numpy and onnxruntime (onnxtax and torch are not
installed in that virtualenv, and must not be: the point is to see what that runtime alone does).

Modes (config "mode"):
  run     load the model once per provider, run every case, write the outputs to an .npz
  limits  load probe models to measure the highest IR version and opsets this runtime accepts

Protocol: one line `RESULT_MARKER + JSON` on stdout. Errors of the runtime (a model it
refuses, a case it cannot run) are reported verbatim in that JSON, never raised.

run config:  {"mode": "run", "model": PATH, "inputs": NPZ, "outputs": NPZ, "opt_level": "ORT_ENABLE_ALL",
              "providers": [[NAME, {OPTIONS}]], "cases": [{"feeds": {"onnx_input": "npz_key"}}]}
run result:  {"onnxruntime": "1.16.3", "numpy": "1.26.4", "available_providers": [...],
              "providers": [{"name": NAME, "status": "ran" | "load-error" | "unavailable",
                             "error": null | TEXT, "load_s": 0.01, "ran_on": [...] | null,
                             "outputs": ["prob"], "cases": [{"error": null | TEXT, "keys": ["p0c0o0"]}]}]}
"""

from __future__ import annotations

import json
import sys
import time

RESULT_MARKER = "ONNXTAX-RUNTIME "


def child_script() -> str:
    """This file's path: what each release's interpreter runs (`python -I PATH CONFIG`)."""
    return __file__


def _session(ort, model: str, name: str, options: dict, opt_level: str):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, opt_level)
    return ort.InferenceSession(model, so, providers=[name], provider_options=[options])


def _run(cfg: dict) -> dict:
    import numpy as np
    import onnxruntime as ort

    available = list(ort.get_available_providers())
    with np.load(cfg["inputs"], allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    outputs: dict[str, object] = {}
    providers = []
    for pi, (name, options) in enumerate(cfg["providers"]):
        entry: dict = {"name": name, "status": "ran", "error": None, "load_s": None, "ran_on": None,
                       "outputs": [], "cases": []}
        providers.append(entry)
        if name not in available:
            entry["status"] = "unavailable"
            has = ", ".join(p.replace("ExecutionProvider", "") for p in available)
            entry["error"] = f"not in this onnxruntime package (it has {has})"
            continue
        t0 = time.perf_counter()
        try:
            session = _session(ort, cfg["model"], name, options or {}, cfg.get("opt_level", "ORT_ENABLE_ALL"))
        except Exception as exc:  # noqa: BLE001 - the runtime's own message is the result
            entry["status"] = "load-error"
            entry["error"] = str(exc).strip() or type(exc).__name__
            continue
        entry["load_s"] = time.perf_counter() - t0
        entry["ran_on"] = list(session.get_providers())
        entry["outputs"] = [o.name for o in session.get_outputs()]
        for ci, case in enumerate(cfg["cases"]):
            feeds = {onnx_name: arrays[key] for onnx_name, key in case["feeds"].items()}
            try:
                result = session.run(None, feeds)
            except Exception as exc:  # noqa: BLE001
                entry["cases"].append({"error": str(exc).strip() or type(exc).__name__, "keys": []})
                continue
            keys = []
            for oi, value in enumerate(result):
                key = f"p{pi}c{ci}o{oi}"
                outputs[key] = np.asarray(value)
                keys.append(key)
            entry["cases"].append({"error": None, "keys": keys})
    np.savez(cfg["outputs"], **outputs)
    return {"onnxruntime": ort.__version__, "numpy": np.__version__, "available_providers": available,
            "providers": providers}


def _limits(cfg: dict) -> dict:
    """Which probe models (built by the parent: same graph, one IR version or opset each) load and run."""
    import numpy as np
    import onnxruntime as ort

    results = []
    for probe in cfg["probes"]:
        try:
            session = _session(ort, probe["path"], "CPUExecutionProvider", {}, "ORT_DISABLE_ALL")
            feeds = {i.name: np.ones([1], dtype=np.float32) for i in session.get_inputs()}
            session.run(None, feeds)
            results.append({"id": probe["id"], "loads": True, "error": None})
        except Exception as exc:  # noqa: BLE001
            results.append({"id": probe["id"], "loads": False, "error": str(exc).strip()[:500]})
    return {"onnxruntime": ort.__version__, "numpy": np.__version__, "probes": results}


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        cfg = json.load(f)
    result = _run(cfg) if cfg["mode"] == "run" else _limits(cfg)
    sys.stdout.write(RESULT_MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
