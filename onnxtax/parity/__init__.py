"""`onnxtax parity`: the ONNX artifact against its eager PyTorch source, per provider, shape and output.

  run            check_parity: sessions, the eager reference, every case compared
  shapes         which shapes and samples a comparison runs
  report         ParityReport and its JSON schema
  localize       where a failing provider first departs from the source
  intermediates  eager and ONNX intermediate values, and the map between them
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxtax.core.faces import lazy_face

_NAMES = {
    "check_parity": "run", "parse_tolerances": "run",
    "ParityReport": "report", "ProviderResult": "report", "CaseResult": "report", "SCHEMA": "report",
    "ShapePlan": "shapes", "plan_shapes": "shapes",
    "Localization": "localize", "localize": "localize", "localize_failures": "localize",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_face(__name__, _NAMES)

if TYPE_CHECKING:
    from onnxtax.parity.localize import Localization, localize, localize_failures
    from onnxtax.parity.report import SCHEMA, CaseResult, ParityReport, ProviderResult
    from onnxtax.parity.run import check_parity, parse_tolerances
    from onnxtax.parity.shapes import ShapePlan, plan_shapes
