"""Hugging Face and sentence-transformers models without a wrapper file: `hf:DIR[#task]` and `st:DIR`.

  spec      the spec parsed, its folder found and read (config.json, modules.json), offline
  tasks     the tasks and what each derives: class, inputs, ranges, outputs kept
  build     derive_hub (no weights loaded) and the module every stage runs (build_hub_module)
  sentence  the sentence-transformers pooling and normalisation, built here
  text      a text file of sentences -> the arrays a .npz would hold, by the folder's tokenizer

Part of core (floor 0): every stage takes these specs. transformers is imported only when a hub
model is derived or built, never by `onnxtax --help`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxtax.core.faces import lazy_face

_NAMES = {
    "is_hub_spec": "spec", "parse_hub_spec": "spec", "spec_with_flags": "spec", "HubSpec": "spec",
    "derive_hub": "build", "HubModel": "build", "build_hub_module": "build",
    "TextFile": "text", "bind_text": "text",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_face(__name__, _NAMES)

if TYPE_CHECKING:
    from onnxtax.core.hub.build import HubModel, derive_hub
    from onnxtax.core.hub.build import build_hub_module
    from onnxtax.core.hub.spec import HubSpec, is_hub_spec, parse_hub_spec, spec_with_flags
    from onnxtax.core.hub.text import TextFile, bind_text
