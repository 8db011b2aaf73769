"""`onnxtax export`: write exactly the model that was asked for, or nothing.

  options   ExportOptions: what the command, the API and a ci model table set
  run       export_model: the exporter, then every check, then the files published together
  result    ExportResult: the checks run, what was written, why it stopped
  smoke     the written file in ONNX Runtime at two sizes of every dynamic axis, against eager
  save      the weights written once from their own memory; the model and its checksums
  capture   what torch.onnx prints and logs, kept for --debug
  graph     opset lock, dynamic axes kept under their names, output dims repaired
  errors    an exporter failure explained at the user's line, with the way out
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxtax.core.faces import lazy_face

_NAMES = {"export_model": "run", "ExportOptions": "options", "ExportResult": "result", "CheckRecord": "result",
          "EXPORTERS": "options", "EXTERNAL_DATA_MODES": "options"}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_face(__name__, _NAMES)

if TYPE_CHECKING:
    from onnxtax.export.options import EXPORTERS, EXTERNAL_DATA_MODES, ExportOptions
    from onnxtax.export.result import CheckRecord, ExportResult
    from onnxtax.export.run import export_model
