"""`onnxtax bench`: the Python tax one call at a time: eager PyTorch vs ONNX Runtime per provider.

  run         run_bench and its report
  timing      interleaved, warmed-up latency measurement of each path
  tuning      the thread/optimisation sweep and ORT's per-op profile
  cold_start  import + load + first call in fresh processes
  child       the cold-start child (imports only what a serving process would)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxtax.core.faces import lazy_face

_NAMES = {"run_bench": "run", "BenchOptions": "options", "BenchReport": "report", "BatchResult": "report",
          "GateResult": "report", "parse_batch_sizes": "options", "parse_latency_gates": "options",
          "batch_axis_of": "run", "time_onnx_models": "timing", "EAGER": "timing", "HARNESS": "timing"}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_face(__name__, _NAMES)

if TYPE_CHECKING:
    from onnxtax.bench.options import BenchOptions, parse_batch_sizes, parse_latency_gates
    from onnxtax.bench.report import BatchResult, BenchReport, GateResult
    from onnxtax.bench.run import batch_axis_of, run_bench
    from onnxtax.bench.timing import EAGER, HARNESS, time_onnx_models
