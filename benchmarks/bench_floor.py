"""Honesty check for `onnxtax bench`: is its ORT figure the runtime's, or the harness's?

Exports examples/fraud_detector.py:FraudDetector (x: [batch, 128]) once, then, in the
same process and alternating the order each repetition:
  - `run_bench` (eager + ORT CPU, batch 1, 1 thread, opt level all, no cold start): its ORT p50;
  - a bare hand-written loop: one session (1 thread, ORT_ENABLE_ALL), input and output
    OrtValues allocated once, `run_with_iobinding` timed per call with perf_counter_ns: its p50.
Prints min / median / max of both over the repetitions and the ratio; the target is
bench within 10% of the floor.

    .venv/bin/python benchmarks/bench_floor.py [--reps 7] [--min-time 1.0] [--strict]

`--strict` exits 1 when the median ratio misses the target (default: report only,
since a shared machine's noise is not the tool's fault).
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
SPEC = f"{ROOT / 'examples' / 'fraud_detector.py'}:FraudDetector"
TARGET = 1.10


def floor_p50_ms(onnx_path: Path, min_time: float, warmup: int = 200) -> tuple[float, float, int]:
    """(p50 ms, mean ms, calls) of the bare I/O-binding loop at batch 1."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 128)).astype(np.float32)
    out = session.run(None, {"x": x})[0]
    binding = session.io_binding()
    x_value = ort.OrtValue.ortvalue_from_numpy(x)
    y_value = ort.OrtValue.ortvalue_from_shape_and_type(list(out.shape), out.dtype)
    binding.bind_ortvalue_input("x", x_value)
    binding.bind_ortvalue_output(session.get_outputs()[0].name, y_value)
    run = session.run_with_iobinding
    for _ in range(warmup):
        run(binding)
    clock = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    deadline = clock() + int(min_time * 1e9)
    while clock() < deadline:
        for _ in range(1000):
            t0 = clock()
            run(binding)
            append(clock() - t0)
    return statistics.median(samples) / 1e6, statistics.fmean(samples) / 1e6, len(samples)


def spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds per path per repetition")
    parser.add_argument("--json", dest="json_path", help="also write the figures as JSON here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args()

    from onnxtax.bench import run_bench
    from onnxtax.export import export_model

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "fraud.onnx"
        result = export_model(SPEC, onnx_path, ["x:batch,128"])
        if not result.passed:
            print(f"export failed: {result.error}", file=sys.stderr)
            return 2
        bench_p50, bench_eager, floor_p50, floor_mean, ratios = [], [], [], [], []
        for rep in range(args.reps):
            order = ("bench", "floor") if rep % 2 == 0 else ("floor", "bench")
            here: dict[str, float] = {}
            for which in order:
                if which == "bench":
                    report = run_bench(SPEC, onnx_path, batch_sizes=[1], providers=["cpu"], threads=1,
                                       opt_level="all", min_time=args.min_time, cold_start=False)
                    batch = report.batches[0]
                    here["bench"] = batch.latency["ort:cpu"].p50_ms
                    bench_eager.append(batch.latency["eager"].p50_ms)
                    call = batch.call_path["ort:cpu"]
                else:
                    here["floor"], mean, _ = floor_p50_ms(onnx_path, args.min_time)
                    floor_mean.append(mean)
            bench_p50.append(here["bench"])
            floor_p50.append(here["floor"])
            ratios.append(here["bench"] / here["floor"])
            print(f"rep {rep + 1}/{args.reps} ({' then '.join(order)}): bench ORT p50 {here['bench'] * 1e3:.2f} us "
                  f"({call}), floor p50 {here['floor'] * 1e3:.2f} us, ratio {ratios[-1]:.3f}", flush=True)

    figures = {"bench_ort_p50_us": spread([v * 1e3 for v in bench_p50]),
               "floor_p50_us": spread([v * 1e3 for v in floor_p50]),
               "floor_mean_us": spread([v * 1e3 for v in floor_mean]),
               "bench_eager_p50_us": spread([v * 1e3 for v in bench_eager]),
               "ratio_bench_over_floor": spread(ratios),
               "reps": args.reps, "min_time_s": args.min_time, "target_ratio": TARGET}
    print()
    print(f"{'':26}{'min':>9}{'median':>9}{'max':>9}")
    for label, key in (("bench ORT p50 (us)", "bench_ort_p50_us"), ("floor p50 (us)", "floor_p50_us"),
                       ("floor mean (us)", "floor_mean_us"), ("bench eager p50 (us)", "bench_eager_p50_us"),
                       ("ratio bench / floor", "ratio_bench_over_floor")):
        s = figures[key]
        print(f"{label:26}{s['min']:9.3f}{s['median']:9.3f}{s['max']:9.3f}")
    ratio = figures["ratio_bench_over_floor"]["median"]
    ok = ratio <= TARGET
    print(f"\nmedian ratio {ratio:.3f}: {'within' if ok else 'OUTSIDE'} the {TARGET - 1:.0%} target")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0 if ok or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
