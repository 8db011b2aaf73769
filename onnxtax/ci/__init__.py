"""`onnxtax ci`: every configured model through every stage, as one CI step; `report merge`.

  config  onnxtax.toml / [tool.onnxtax]: found, validated before any work, resolved
  run     run_ci: the chain per model, each artifact opened once
  report  the per-model and run-level reports (JSON, JUnit, SARIF, markdown)
  merge   several hosts' reports -> one matrix
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxtax.core.faces import lazy_face

_NAMES = {"run_ci": "run", "CiReport": "report", "ModelRun": "report", "StageResult": "report",
          "load_config": "config", "OnnxtaxConfig": "config", "ModelConfig": "config",
          "merge_reports": "merge", "Matrix": "merge"}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_face(__name__, _NAMES)

if TYPE_CHECKING:
    from onnxtax.ci.config import ModelConfig, OnnxtaxConfig, load_config
    from onnxtax.ci.merge import Matrix, merge_reports
    from onnxtax.ci.report import CiReport, ModelRun, StageResult
    from onnxtax.ci.run import run_ci
