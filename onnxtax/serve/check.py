"""Correct in the host that serves it: parity's cases (its shapes, seeded samples in the declared
ranges, and any data files) sent through a host's own request path, its outputs read back with
the dtype and shape its runtime gave them, and compared with the eager model under parity's rule
(onnxtax.core.compare), as the runtime matrix compares a release.

A case is rows of request frames (the batch axis cut into rows, as the generator sends them):
the host assembles them into its own tensors, runs its runtime, and encodes the outputs as it
would answer a batch. What can slip between languages (an element type read as another, a
layout, an output order) shows as a dtype, shape or value difference, named per output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxtax.core.errors import InputSpecError
from onnxtax.serve.report import Correctness


@dataclass
class CheckCases:
    """What every checked host is sent, and what the eager model answered."""

    plans: list[Any]  # parity ShapePlans
    cases: list[dict] = field(default_factory=list)  # {"plan", "sample", "rows", "row_shapes", "offset", "nbytes"}
    expected: list[list[Any]] = field(default_factory=list)  # per case, the eager outputs
    output_names: list[str] = field(default_factory=list)
    blob: Path | None = None
    rule: Any = None  # onnxtax.core.compare.ToleranceRule, the model's own noise measured

    def host_config(self, work: Path, tag: str) -> dict:
        return {"file": str(self.blob), "cases": [{k: c[k] for k in ("rows", "row_shapes", "offset", "nbytes")}
                                                  for c in self.cases],
                "out": str(work / f"check-{tag}.bin"), "result": str(work / f"check-{tag}.json")}


def build_cases(reference, resolved, recipe, options, work: Path) -> CheckCases:
    """parity's shape plans and samples, their eager outputs, and the request frames of each."""
    import numpy as np

    from onnxtax.parity.shapes import plan_data_file, plan_shapes, sample_inputs

    specs = resolved.specs
    plans = plan_shapes(specs, options.dims, resolved.export_sizes, samples=options.samples,
                        joint=resolved.source == "onnx-graph", max_shapes=options.max_shapes) if options.samples else []
    plans += [plan_data_file(f, specs) for f in options.data_files or []]
    out = CheckCases(plans, output_names=list(resolved.output_names))
    blob = bytearray()
    for pi, plan in enumerate(plans):
        for k in range(plan.samples):
            arrays = sample_inputs(plan, specs, recipe, k)
            expected = reference(arrays, f"{plan.label} sample {k}", plan.file)
            if len(expected) != len(out.output_names):
                raise InputSpecError(f"the eager model returns {len(expected)} outputs, the ONNX graph has "
                                     f"{len(out.output_names)} ({', '.join(out.output_names)})",
                                     "give the model spec this file was exported from")
            rows = int(arrays[specs[0].name].shape[0])
            ordered = [np.ascontiguousarray(arrays[s.name]) for s in specs]
            start = len(blob)
            for r in range(rows):
                blob += (0).to_bytes(8, "little") + b"".join(a[r].tobytes() for a in ordered)
            out.cases.append({"plan": pi, "sample": k, "rows": rows, "row_shapes": [list(a.shape[1:]) for a in ordered],
                              "offset": start, "nbytes": len(blob) - start})
            out.expected.append(expected)
    out.blob = work / "check-inputs.bin"
    out.blob.write_bytes(bytes(blob))
    from onnxtax.core.compare import ToleranceRule
    from onnxtax.parity.comparison import measure_case_noise

    out.rule = ToleranceRule(options.rtol, options.atol, options.min_cosine, options.noise_factor,
                             dict(options.tolerances or {}))
    measure_case_noise(out.rule, reference, plans, out.cases, out.expected, specs, recipe, out.output_names)
    return out


def read_host_outputs(check_cfg: dict) -> list[dict]:
    """Per case: {"error": text | None, "outputs": [numpy arrays as the host returned them]}."""
    import numpy as np

    result = json.loads(Path(check_cfg["result"]).read_text(encoding="utf-8"))
    blob = Path(check_cfg["out"]).read_bytes()
    cases = []
    for entry in result["cases"]:
        arrays = []
        for o in entry.get("outputs") or []:
            dtype = np.dtype("bool" if o["dtype"] == "bool" else o["dtype"])
            data = np.frombuffer(blob, dtype=np.uint8, count=int(o["nbytes"]), offset=int(o["offset"]))
            count = 1
            for d in o["dims"]:
                count *= int(d)
            if count * dtype.itemsize != data.size:
                arrays.append(_Unreadable(o["dtype"], o["dims"], data.size))
                continue
            arrays.append(data.view(dtype).reshape([int(d) for d in o["dims"]]))
        cases.append({"error": entry.get("error"), "outputs": arrays})
    return cases


class _Unreadable:
    """Bytes that do not make the dtype x shape the host said they were."""

    def __init__(self, dtype: str, dims: list, nbytes: int):
        self.text = f"{nbytes} bytes returned for a {dtype} tensor of shape {list(dims)}"


def compare(path_id: str, cases: CheckCases, got: list[dict]) -> Correctness:
    """parity's rule per shape x output, folded over the samples of each shape (atol scaled by the
    eager output's RMS at that shape and the model's own noise, the cosine gate per sample)."""
    from onnxtax.core.compare import rms
    from onnxtax.parity import CaseResult

    names = cases.output_names
    stats: dict[tuple[int, int], Any] = {}
    errors: dict[int, str] = {}
    problems: dict[tuple[int, int], str] = {}
    scales = {(pi, oi): rms([e[oi] for c, e in zip(cases.cases, cases.expected) if c["plan"] == pi])
              for pi in range(len(cases.plans)) for oi in range(len(names))}
    for case, expected, entry in zip(cases.cases, cases.expected, got):
        pi = case["plan"]
        if entry["error"] is not None:
            errors.setdefault(pi, entry["error"])
            continue
        outputs = entry["outputs"]
        if len(outputs) != len(names):
            errors.setdefault(pi, f"the host returned {len(outputs)} outputs, the graph has {len(names)}")
            continue
        for oi, (actual, want) in enumerate(zip(outputs, expected)):
            if isinstance(actual, _Unreadable):
                problems.setdefault((pi, oi), actual.text)
                continue
            acc = stats.get((pi, oi))
            if acc is None:
                acc = stats[(pi, oi)] = cases.rule.stats(names[oi], want)
            acc.update(actual, want, sample=case["sample"], scale=scales[(pi, oi)])
    results = []
    for pi, plan in enumerate(cases.plans):
        for oi, name in enumerate(names):
            acc = stats.get((pi, oi))
            if (pi, oi) in problems or acc is None:
                why = problems.get((pi, oi)) or f"the host failed to run {plan.label}: {errors.get(pi)}"
                results.append(CaseResult(plan.label, name, "error" if (pi, oi) not in problems else "failed", why))
                continue
            reason = acc.failure_reason()
            if pi in errors:
                reason = "; ".join(filter(None, [reason, f"a later sample failed to run: {errors[pi]}"]))
            results.append(CaseResult(plan.label, name, "passed" if reason is None else "failed", reason, acc))
    out = Correctness("passed", None, results)
    bad = [c for c in results if not c.passed]
    if bad:
        first = bad[0]
        out.status = "error" if all(c.status == "error" for c in bad) else "failed"
        verb = "cannot run" if first.status == "error" else "differs from the eager model"
        out.message = (f"output {first.output} {verb} at {first.shape}: {first.reason}"
                       + (f" (+{len(bad) - 1} more of {len(results)} cases)" if len(bad) > 1 else ""))
    return out
