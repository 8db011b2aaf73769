"""`onnxtax runtimes`: the artifact on each listed onnxruntime release, each in its own virtualenv.

  matrix  check_runtimes: releases x providers, loads or not, values against the eager model
  envs    the cached virtualenvs, one per release: built once, atomically, reused offline
  child   the script each release runs (standard library, numpy and onnxruntime only)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxtax.core.faces import lazy_face

_NAMES = {"check_runtimes": "matrix", "RuntimeMatrixReport": "matrix", "RuntimeResult": "matrix",
          "parse_versions": "matrix", "target_verifier": "matrix"}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_face(__name__, _NAMES)

if TYPE_CHECKING:
    from onnxtax.runtimes.matrix import (RuntimeMatrixReport, RuntimeResult, check_runtimes, parse_versions,
                                         target_verifier)
