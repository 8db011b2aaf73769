"""`onnxtax quantize`: INT8 written only when every data segment stays within every budget.

  run       quantize_model and check_quantized: builds, evaluation per segment, the report
  graph     building an INT8 graph with ORT's quantization tools; per-node error
  segments  evaluation data by segment, metrics and budgets
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxtax.core.faces import lazy_face

_NAMES = {"quantize_model": "run", "check_quantized": "run", "QuantizeOptions": "options",
          "QuantizeReport": "report", "parse_budgets": "segments", "Budget": "segments"}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_face(__name__, _NAMES)

if TYPE_CHECKING:
    from onnxtax.quantize.options import QuantizeOptions
    from onnxtax.quantize.report import QuantizeReport
    from onnxtax.quantize.run import check_quantized, quantize_model
    from onnxtax.quantize.segments import Budget, parse_budgets
