"""Defaults that both a library stage and its command's --help need. This module imports
nothing, so the CLI can show them without importing the stage (and numpy with it)."""

# parity: ~3x the worst FP32 drift measured on real exports, 10x below a 1e-3 weight change
PARITY_RTOL = 1e-4
PARITY_ATOL = 1e-5
PARITY_SAMPLES = 3
PARITY_MAX_SHAPES = 9  # full product of axis values up to this many shapes, joint variation beyond

# onnxruntime graph optimisation levels by the names onnxtax takes (GraphOptimizationLevel members)
ORT_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                  "all": "ORT_ENABLE_ALL"}

# bench
BENCH_THREADS = 1
BENCH_WARMUP = 20
BENCH_MIN_TIME = 1.0
BENCH_COLD_START_RUNS = 3
BENCH_MAX_SAMPLES = 200_000  # per path and batch size: bounds memory for microsecond calls
