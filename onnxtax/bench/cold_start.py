"""Bench's cold start: each path started in a fresh interpreter, several times, interleaved,
because the first result of a new process (imports, model load, first call) is what a
short-lived job or a scaled-out replica pays."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from onnxtax.core.specs import DTYPES, InputSpec, ValueRange, concrete_shape
from onnxtax.bench.timing import EAGER, Spread, OrtPath, threaded

COLD_START_TIMEOUT = 600


@dataclass
class ColdStart:
    """Fresh-process start-up of one path; `measured=False` says why not."""

    path: str
    measured: bool
    reason: str | None = None
    first_result_s: Spread | None = None
    interpreter_s: Spread | None = None
    import_s: Spread | None = None
    load_s: Spread | None = None
    predict_s: Spread | None = None
    peak_rss_mb: Spread | None = None
    rss_source: str | None = None

    @property
    def runs(self) -> int:
        return len(self.first_result_s.values) if self.first_result_s else 0

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"measured": self.measured, "reason": self.reason, "runs": self.runs}
        for key in ("first_result_s", "interpreter_s", "import_s", "load_s", "predict_s", "peak_rss_mb"):
            value = getattr(self, key)
            out[key] = value.to_dict() if value else None
        out["rss_source"] = self.rss_source
        return out


def _child_inputs(specs: list[InputSpec], sizes: dict[str, int], ranges: dict[str, ValueRange]) -> list[dict]:
    out = []
    for spec in specs:
        np_dtype = DTYPES[spec.dtype][0]
        kind = "bool" if spec.dtype == "bool" else ("int" if np_dtype.startswith(("int", "uint")) else "float")
        r = ranges.get(spec.name)
        out.append({"name": spec.name, "shape": list(concrete_shape(spec, sizes)), "kind": kind,
                    "numpy_dtype": np_dtype, "torch_dtype": DTYPES[spec.dtype][2],
                    "low": int(r.low) if r else 0, "high": int(r.high) if r else 10})
    return out


def _run_child(cfg: dict, env: dict | None) -> dict:
    from onnxtax.core.child import run_in_child

    result = run_in_child("onnxtax.bench.child:cold_start", cfg, timeout=COLD_START_TIMEOUT, env=env)
    if not result:
        kind = f"{result.error_type}: " if result.status == "error" and result.error_type else ""
        return {"error": f"{kind}{result.message}"}
    data = dict(result.value)
    data["stamps_ns"]["interpreter_ready"] = result.started_ns
    data["spawn_ns"] = result.spawn_ns
    return data


def cold_start_paths(spec: str | None, spec_reason: str | None, onnx_path: Path, ort_paths: list[OrtPath],
                specs: list[InputSpec], sizes: dict[str, int], ranges: dict[str, ValueRange],
                threads: int | None, opt_level: str, runs: int, tick: Callable[[str], None]
                ) -> dict[str, ColdStart]:
    child_inputs = _child_inputs(specs, sizes, ranges)
    jobs: list[tuple[str, dict]] = []
    results: dict[str, ColdStart] = {}
    if spec is not None:
        jobs.append((EAGER, {"kind": "torch", "spec": spec, "threads": threads, "inputs": child_inputs}))
    elif spec_reason:
        results[EAGER] = ColdStart(EAGER, False, spec_reason)
    for p in ort_paths:
        jobs.append((p.info.id, {"kind": "ort", "onnx": str(onnx_path.resolve()), "provider": p.request.name,
                                 "provider_options": dict(threaded(p.request, threads).options), "threads": threads,
                                 "opt_level": opt_level, "inputs": child_inputs}))
    env = dict(os.environ)
    target = (spec or "").rpartition(":")[0]
    if spec is not None and not (target.endswith(".py") or "/" in target or "\\" in target):
        # a `package.module:NAME` spec must resolve in the child as it did here
        env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    raw: dict[str, list[dict]] = {path: [] for path, _ in jobs}
    errors: dict[str, str] = {}
    for _ in range(runs):
        for path, cfg in jobs:  # interleaved: torch, ort, torch, ort ...
            if path in errors:
                continue
            tick(f"cold start: {path}")
            data = _run_child(cfg, env)
            if "error" in data:
                errors[path] = data["error"]
            else:
                raw[path].append(data)
    for path, _ in jobs:
        if path in errors:
            results[path] = ColdStart(path, False, f"the fresh process failed: {errors[path]}")
            continue
        def spread(a: str, b: str, rows=raw[path]) -> Spread:
            return Spread([(r["stamps_ns"][b] - (r["spawn_ns"] if a == "spawn" else r["stamps_ns"][a])) / 1e9
                           for r in rows])
        results[path] = ColdStart(
            path, True, None,
            first_result_s=spread("spawn", "first_result"),
            interpreter_s=spread("spawn", "interpreter_ready"),
            import_s=spread("import_start", "import_end"),
            load_s=spread("import_end", "load_end"),
            predict_s=spread("load_end", "first_result"),
            peak_rss_mb=Spread([r["peak_rss_kb"] / 1024 for r in raw[path]]),
            rss_source=raw[path][0]["rss_source"])
    return results
