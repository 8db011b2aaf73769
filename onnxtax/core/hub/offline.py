"""transformers imported with the Hub switched off: the one door every hf:/st: path goes through,
so nothing is ever downloaded, whatever the spec."""

from __future__ import annotations

import os
from typing import Any

from onnxtax.core.errors import LoadError

INSTALL_HINT = "install transformers: pip install 'onnxtax[models]'"


def offline_transformers() -> Any:
    """transformers, imported with the Hub switched off: nothing is downloaded, whatever the spec."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        import transformers
    except ImportError as exc:
        raise LoadError("hf: and st: specs need the transformers package, which is not installed",
                        INSTALL_HINT) from exc
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers
