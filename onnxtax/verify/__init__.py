"""`onnxtax verify` and `onnxtax sign`: is this artifact the one that was exported, who signed it,
and which gates did it pass?

  checksums  every file the manifest lists, recomputed inside the artifact's folder
  keys       the signing keys (PEM elliptic-curve), checked before any work
  sign       OpenSSF model signing of the artifact's own files
  signature  the check of that signature (fails closed, naming the file and the reason)
  attest     the provenance: an in-toto statement with a SLSA provenance predicate
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxtax.core.faces import lazy_face

_NAMES = {"verify_artifact": "checksums", "VerifyReport": "checksums", "FileCheck": "checksums",
          "DATA_SUFFIXES": "checksums", "sign_artifact": "sign", "SignReport": "sign", "check_signature": "signature",
          "SignatureCheck": "signature", "gate_entry": "attest", "gate_kind": "attest", "gates_of": "attest",
          "KeyFileError": "keys"}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_face(__name__, _NAMES)

if TYPE_CHECKING:
    from onnxtax.verify.attest import gate_entry, gate_kind, gates_of
    from onnxtax.verify.checksums import DATA_SUFFIXES, FileCheck, VerifyReport, verify_artifact
    from onnxtax.verify.keys import KeyFileError
    from onnxtax.verify.sign import SignReport, sign_artifact
    from onnxtax.verify.signature import SignatureCheck, check_signature
