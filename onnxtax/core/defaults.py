"""Every default a library stage, the config file and a command's --help share, in one place.
This module imports nothing, so the CLI can show them without importing the stage (and numpy
with it)."""

# export
OPSET = 18  # every ORT since 1.14 runs it; the dynamo exporter builds at 18 and converts from there
EXPORTER = "dynamo"
EXTERNAL_DATA = "auto"  # weights beside the model only above protobuf's 2 GB limit
MIN_OPSET, MAX_OPSET = 7, 26  # what --opset and the config's `opset` accept (export and ci check the same range)

# onnxruntime sessions
OPT_LEVEL = "all"
# onnxruntime graph optimisation levels by the names onnxtax takes (GraphOptimizationLevel members)
ORT_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                  "all": "ORT_ENABLE_ALL"}

# parity: ~3x the worst FP32 drift measured on real exports, 10x below a 1e-3 weight change
PARITY_RTOL = 1e-4
PARITY_ATOL = 1e-5
PARITY_SAMPLES = 3
PARITY_SEED = 0
PARITY_MAX_SHAPES = 9  # full product of axis values up to this many shapes, joint variation beyond
# tolerance from the model's own noise (onnxtax.core.noise): an output's atol and rtol are at least
# k x its rounding noise relative to its RMS (eager against itself in float64), at most
# PARITY_NOISE_CAP. k depends on the dtype the model computes the output in: in float32 the noise is
# summation order, which providers change (OpenVINO's 16384-long reductions round 7x more than
# torch's); in float16/bfloat16 it is the rounding of each activation, which every runtime does
# alike. Chosen by benchmarks/parity_headroom.py (docs/parity.md has the table).
PARITY_NOISE_FACTOR = 64.0
PARITY_NOISE_FACTOR_HALF = 12.0
PARITY_NOISE_CAP = 1e-2
# similarity gate: 1 - cos ~ err^2/2, so 0.999 fails a relative L2 error above ~4.5%; FP32 drift is ~1e-6
PARITY_MIN_COSINE = 0.999
# a size just outside a range torch.export assumed is tested up to this size; beyond, the axis is noted untested
PARITY_ASSUMED_SIZE_CAP = 4096
# localisation of a parity failure: time for all providers together; intermediates held per chunk
LOCALIZE_TIME_BUDGET_S = 120.0
LOCALIZE_MEMORY_MB = 512.0
# the CPU session uses the eager model's parameter memory (auto: when the weights reach the threshold)
PARITY_SHARE_WEIGHTS = "auto"
PARITY_SHARE_MIN_BYTES = 256 * 2**20

# lint
LINT_FAIL_ON = "error"

# bench
BENCH_BATCH_SIZES = (1, 8, 64)
BENCH_THREADS = 1
BENCH_WARMUP = 20
BENCH_MIN_TIME = 1.0
BENCH_COLD_START_RUNS = 3
BENCH_MAX_SAMPLES = 200_000  # per path and batch size: bounds memory for microsecond calls

# quantize
QUANTIZE_MODE = "auto"  # dynamic and static (with calibration data), the fastest that passes
QUANTIZE_FORMAT = "qdq"  # ORT's recommended format for CPU since 1.11
QUANTIZE_CALIBRATION_METHOD = "minmax"
QUANTIZE_MAX_EXCLUDE = 8
QUANTIZE_BATCH_SIZE = 64  # rows per mixed batch of the batched evaluation: bench's largest batch
QUANTIZE_BENCH_MIN_TIME = 0.3  # seconds per build and batch size: an estimate beside a verdict, not a benchmark

# memory preflight (onnxtax.core.memory): a stage's peak RSS ~= factor x the model's weights + a base for
# the interpreter and the torch/onnxruntime imports. From peak RSS measured on the reference host
# (Linux, 23 GB) on N x Linear(W, W) FP32 models: benchmarks/scale.py at 1.07 GB and 2.68 GB
# (docs/large-models.md, "Measured"), and the stages' own `memory` records at 0.27 GB and 1.07 GB;
# factor = (peak - base) / weights, the highest seen, rounded up.
MEMORY_BASE_BYTES = 300 * 10**6  # what a tiny model's stage peaks at (imports), ~0.3 GB
MEMORY_FACTORS = {
    "export": 1.15,           # weights inside the .onnx (under 2 GB): 1.14x at 1.07 GB
    "export-external": 1.06,  # external data (over 2 GB, or --external-data always): (peak - 0.3 GB) / weights
                              # 1.06x at 2.68 GB, 1.02x at 7.52 GB (benchmarks/scale.py); the bare exporter's own
    "parity": 1.05,           # --share-weights auto/always, weights shared with the eager model: 1.0x
    "parity-unshared": 2.25,  # --share-weights never (or auto under 256 MB): eager + session, 2.23x at 1.07 GB
    "parity-provider": 1.0,   # each non-CPU provider's session loads its own copy (added per provider)
    "lint": 0.05,             # graph without weights, one ORT load without pre-packing: peak 0.09 GB at 1-2.7 GB
    "lint-source": 1.0,       # added with --source: the eager model, traced (not measured at scale)
    "verify": 0.0,            # sha256 in 1 MB chunks: ~0.01x
    "bench": 2.1,             # eager model + a server's session from the file (pre-packed): 2.07x
    "runtimes": 2.25,         # eager reference + one child process loading the file at a time (as parity unshared)
    "quantize": 4.0,          # not measured at scale: FP32 proto + INT8 proto + eager + sessions, an upper guess
}
MEMORY_CHECK = "warn"  # warn | fail | off: what a stage does when its estimate exceeds the memory it can have
