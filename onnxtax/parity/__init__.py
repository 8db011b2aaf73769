"""`onnxtax parity`: the ONNX artifact against its eager PyTorch source, per provider, shape and output.

  options        ParityOptions (and ComparisonOptions, shared with the runtime matrix)
  run            check_parity: the eager reference, every shape and sample, localisation on failure
  sessions       one ORT session per provider, on shared weights where it can
  comparison     running statistics per provider x shape x output, then the cases
  diagnosis      why a provider failed, only from the evidence
  attribution    a failure outside an assumed range blamed on it only when inside it the sample passes
  shapes         which shapes and samples a comparison runs
  report         ParityReport and its JSON schema
  localization   where a failing provider first departs from the source
  intermediates  eager and ONNX intermediate values, and the map between them
  points         one value compared: the unit every localisation claim is made of
  suspect        the first divergent module: local or inherited, its node and weights
  ops, opsearch  the op inside it: eager calls paired with ONNX op groups, compared one by one
  rows           the failing rows and what their inputs share
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxtax.core.faces import lazy_face

_NAMES = {
    "check_parity": "run", "ParityOptions": "options", "ComparisonOptions": "options",
    "parse_tolerances": "options", "placement_text": "report", "sample_inputs": "shapes", "plan_data_file": "shapes",
    "ParityReport": "report", "ProviderResult": "report", "CaseResult": "report", "SCHEMA": "report",
    "ShapePlan": "shapes", "plan_shapes": "shapes",
    "Localization": "localization", "localize": "localization", "localize_failures": "run",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_face(__name__, _NAMES)

if TYPE_CHECKING:
    from onnxtax.parity.localization import Localization, localize
    from onnxtax.parity.options import ComparisonOptions, ParityOptions, parse_tolerances
    from onnxtax.parity.report import SCHEMA, CaseResult, ParityReport, ProviderResult, placement_text
    from onnxtax.parity.run import check_parity, localize_failures
    from onnxtax.parity.shapes import ShapePlan, plan_data_file, plan_shapes, sample_inputs
