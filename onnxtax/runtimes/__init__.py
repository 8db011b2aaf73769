"""`onnxtax runtimes`: the artifact on each listed onnxruntime release, each in its own virtualenv.

  options RuntimesOptions: the releases, providers and cache, with parity's comparison options
  matrix  check_runtimes: releases x providers, loads or not, values against the eager model
  envs    the cached virtualenvs, one per release: built once, atomically, reused offline
  child   the script each release runs (standard library, numpy and onnxruntime only)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxtax.core.faces import lazy_face

_NAMES = {"check_runtimes": "matrix", "RuntimeMatrixReport": "matrix", "RuntimeResult": "matrix",
          "RuntimesOptions": "options", "parse_versions": "envs", "version_key": "envs",
          "target_verifier": "matrix", "measure_limits": "matrix", "record_matrix": "matrix"}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_face(__name__, _NAMES)

if TYPE_CHECKING:
    from onnxtax.runtimes.envs import parse_versions, version_key
    from onnxtax.runtimes.matrix import (RuntimeMatrixReport, RuntimeResult, check_runtimes,
                                         measure_limits, record_matrix, target_verifier)
    from onnxtax.runtimes.options import RuntimesOptions
