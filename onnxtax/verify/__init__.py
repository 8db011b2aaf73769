"""`onnxtax verify`: is this artifact the one that was exported?

  checksums  every file the manifest lists, recomputed inside the artifact's folder
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxtax.core.faces import lazy_face

_NAMES = {"verify_artifact": "checksums", "VerifyReport": "checksums", "FileCheck": "checksums",
          "DATA_SUFFIXES": "checksums"}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_face(__name__, _NAMES)

if TYPE_CHECKING:
    from onnxtax.verify.checksums import DATA_SUFFIXES, FileCheck, VerifyReport, verify_artifact
