"""`onnxtax export`: write exactly the model that was asked for, or nothing.

  run       export_model: the exporter, then every check, then the files published together
  graph     opset lock, dynamic axes kept under their names, output dims repaired
  errors    an exporter failure explained at the user's line, with the way out
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxtax.core.faces import lazy_face

_NAMES = {"export_model": "run", "ExportResult": "run", "CheckRecord": "run", "EXPORTERS": "run",
          "EXTERNAL_DATA_MODES": "run"}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_face(__name__, _NAMES)

if TYPE_CHECKING:
    from onnxtax.export.run import EXPORTERS, EXTERNAL_DATA_MODES, CheckRecord, ExportResult, export_model
