"""What `onnxtax quantize` costs over doing the same work by hand, and INT8 vs FP32 latency here.

On the fraud example (examples/fraud_detector.py, 128 features; data from examples/fraud_data.py:
512 calibration rows with 5% tail rows, segments ordinary 1900 rows and tail 100 rows):

1. quantize + evaluate, in one process, rotating the order each repetition:
   - `quantize_model(...)`, static QDQ MinMax, one build, both segments one row at a time and
     in mixed batches of 64, FP32 ORT beside it, the manifest written; its latency measurement
     cut to batch 1 and 0.01 s per path (reported apart below);
   - a bare floor doing the same quality work with ORT and torch alone: quant_pre_process,
     quantize_static, the eager reference in batches of 64, the INT8 model one row at a time
     and batched, FP32 ORT batched, agreement per segment.
2. INT8 vs FP32 latency at batch 1, 8, 64 (p50), through bench's harness (`time_onnx_models`:
   I/O binding, interleaved blocks, 1 thread) and through a bare hand loop over
   `run_with_iobinding` with the same pre-allocated OrtValues, per repetition.

Prints min / median / max over the repetitions and the ratios of the medians.

    .venv/bin/python benchmarks/quantize_cost.py [--reps 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SPEC = f"{EXAMPLES / 'fraud_detector.py'}:FraudDetector"
sys.path.insert(0, str(EXAMPLES))


def spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def fmt(s: dict, unit: str = "s", scale: float = 1.0) -> str:
    return f"min {s['min'] * scale:.3g} / median {s['median'] * scale:.3g} / max {s['max'] * scale:.3g} {unit}"


def bare_quantize(fp32: Path, work: Path, data: Path) -> dict:
    """The same quality check with ORT and torch alone (no report, no tables, no manifest)."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    from fraud_detector import FraudDetector

    pre, int8 = work / "bare-pre.onnx", work / "bare-int8.onnx"
    quant_pre_process(str(fp32), str(pre))
    cal = np.load(data / "fraud_calibration_representative.npz")["x"]

    class Reader:
        def __init__(self):
            self.it = iter(cal[i:i + 32] for i in range(0, len(cal), 32))

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"x": x}

    quantize_static(str(pre), str(int8), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    model = FraudDetector().eval()
    q = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    f = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    segments = {name: np.load(data / f"fraud_{name}.npz")["x"] for name in ("ordinary", "tail")}
    everything = np.concatenate(list(segments.values()))
    order = np.random.default_rng(0).permutation(len(everything))
    batched = np.empty((len(everything), 1), np.float32)
    for i in range(0, len(order), 64):
        batched[order[i:i + 64]] = q.run(None, {"x": everything[order[i:i + 64]]})[0]
    out, start = {}, 0
    for name, x in segments.items():
        with torch.inference_mode():
            ref = np.concatenate([model(torch.from_numpy(x[i:i + 64])).numpy() for i in range(0, len(x), 64)])
        rows = np.concatenate([q.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))])
        fp = f.run(None, {"x": x})[0]
        b = batched[start:start + len(x)]
        start += len(x)
        out[name] = min(((rows > 0.5) == (ref > 0.5)).mean(), ((b > 0.5) == (ref > 0.5)).mean(),
                        ((fp > 0.5) == (ref > 0.5)).mean() + 1)  # fp32 computed, as onnxtax does
    return out


def floor_latency(session, feeds: dict, seconds: float) -> float:
    """p50 (ms) of a bare run_with_iobinding loop with pre-allocated OrtValues."""
    import numpy as np
    import onnxruntime as ort

    binding = session.io_binding()
    keep = []
    for name, arr in feeds.items():
        v = ort.OrtValue.ortvalue_from_numpy(arr, "cpu", 0)
        binding.bind_ortvalue_input(name, v)
        keep.append(v)
    out = session.run(None, feeds)[0]
    ov = ort.OrtValue.ortvalue_from_shape_and_type(list(out.shape), out.dtype, "cpu", 0)
    binding.bind_ortvalue_output(session.get_outputs()[0].name, ov)
    for _ in range(20):
        session.run_with_iobinding(binding)
    samples = []
    end = time.perf_counter() + seconds
    clock = time.perf_counter_ns
    while time.perf_counter() < end:
        t0 = clock()
        session.run_with_iobinding(binding)
        samples.append(clock() - t0)
    return float(np.median(samples)) / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import fraud_data
    import numpy as np

    from onnxtax.bench import time_onnx_models
    from onnxtax.export import export_model
    from onnxtax.core import ProviderRequest, open_session
    from onnxtax.quantize import quantize_model

    fraud_data.main()
    data = EXAMPLES / "data"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fp32 = work / "fraud.onnx"
        assert export_model(SPEC, fp32, ["x:batch,128"])
        evals = [f"ordinary={data / 'fraud_ordinary.npz'}", f"tail={data / 'fraud_tail.npz'}"]
        tool, bare = [], []
        for rep in range(args.reps):
            order = ("tool", "bare") if rep % 2 == 0 else ("bare", "tool")
            for which in order:
                t0 = time.perf_counter()
                if which == "tool":
                    report = quantize_model(SPEC, fp32, work / f"int8-{rep}.onnx", evals=evals,
                                            budgets=["agreement@0.5=0.9"], mode="static",
                                            calibration=[data / "fraud_calibration_representative.npz"],
                                            bench_batch_sizes=[1], bench_min_time=0.01)
                    tool.append(time.perf_counter() - t0)
                    assert report.candidates[0].evaluation is not None
                else:
                    bare_quantize(fp32, work, data)
                    bare.append(time.perf_counter() - t0)
        ratio = statistics.median(tool) / statistics.median(bare)
        print(f"quantize + evaluate, onnxtax: {fmt(spread(tool))}")
        print(f"quantize + evaluate, bare ORT/torch floor: {fmt(spread(bare))}")
        print(f"ratio of medians: {ratio:.2f}x (onnxtax also writes the manifest and keeps the report)")

        int8 = work / "int8-0.onnx"
        if not int8.is_file():
            int8 = next(work.glob("int8-*.onnx"))
        req = ProviderRequest("CPUExecutionProvider")
        x = np.load(data / "fraud_ordinary.npz")["x"]
        results = {}
        for bs in (1, 8, 64):
            feeds = {"x": np.ascontiguousarray(x[:bs])}
            rows = {"harness_fp32": [], "harness_int8": [], "floor_fp32": [], "floor_int8": []}
            for _ in range(args.reps):
                stats = time_onnx_models({"fp32": fp32, "int8": int8}, req, feeds, min_time=0.3)
                rows["harness_fp32"].append(stats["fp32"].p50_ms)
                rows["harness_int8"].append(stats["int8"].p50_ms)
                for name, path in (("fp32", fp32), ("int8", int8)):
                    sess = open_session(path, req, threads=1, record_placement=False)
                    rows[f"floor_{name}"].append(floor_latency(sess, feeds, 0.3))
            results[bs] = {k: spread(v) for k, v in rows.items()}
            r = results[bs]
            print(f"batch {bs:>2}: FP32 p50 {fmt(r['harness_fp32'], 'us', 1e3)}; INT8 p50 "
                  f"{fmt(r['harness_int8'], 'us', 1e3)}; INT8/FP32 speedup (medians) "
                  f"{r['harness_fp32']['median'] / r['harness_int8']['median']:.2f}x; bare loop: FP32 "
                  f"{r['floor_fp32']['median'] * 1e3:.3g} us, INT8 {r['floor_int8']['median'] * 1e3:.3g} us "
                  f"(harness/floor {r['harness_int8']['median'] / r['floor_int8']['median']:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps({"quantize_s": {"onnxtax": spread(tool), "bare": spread(bare),
                                                        "ratio_of_medians": ratio},
                                         "latency_ms": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
