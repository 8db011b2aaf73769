"""`onnxtax ci`: every configured model through every stage, as one CI step; `report merge`.

  config  onnxtax.toml / [tool.onnxtax]: found, resolved into each stage's options
  schema  every table and key of the file, validated before any work, errors at their line
  run     run_ci: the chain per model, the reports folder
  stages  each stage of one model, sharing the eager model (built once) and the artifact (opened once)
  report  the per-model and run-level reports, and their JSON
  files   the reports folder: junit.xml, lint.sarif, summary.md, host.json, ci.json
  merge   several hosts' reports -> one matrix
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxtax.core.faces import lazy_face

_NAMES = {"run_ci": "run", "CiReport": "report", "ModelRun": "report", "StageResult": "report",
          "load_config": "config", "OnnxtaxConfig": "config", "ModelConfig": "config",
          "merge_reports": "merge", "Matrix": "merge", "write_matrix": "merge", "matrix_markdown": "merge",
          "STAGES": "report", "STAGE_TITLES": "report", "MODEL_SCHEMA": "report", "RUN_SCHEMA": "report",
          "peak_cell": "files", "write_reports": "files", "summary_markdown": "files"}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_face(__name__, _NAMES)

if TYPE_CHECKING:
    from onnxtax.ci.config import ModelConfig, OnnxtaxConfig, load_config
    from onnxtax.ci.merge import Matrix, matrix_markdown, merge_reports, write_matrix
    from onnxtax.ci.files import peak_cell, summary_markdown, write_reports
    from onnxtax.ci.report import MODEL_SCHEMA, RUN_SCHEMA, STAGE_TITLES, STAGES, CiReport, ModelRun, StageResult
    from onnxtax.ci.run import run_ci
