"""onnxtax: PyTorch model -> verified ONNX artifact that ONNX Runtime serves natively.

The public API is imported lazily so that `import onnxtax` (and `onnxtax --help`)
does not pay for torch or onnxruntime.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "export_model": "onnxtax.export",
    "ExportResult": "onnxtax.export",
    "load_model": "onnxtax.loading",
    "verify_artifact": "onnxtax.manifest",
    "host_providers": "onnxtax.providers",
    "check_parity": "onnxtax.parity",
    "ParityReport": "onnxtax.parity",
    "lint_model": "onnxtax.lint",
    "LintReport": "onnxtax.lint",
    "run_bench": "onnxtax.bench",
    "BenchReport": "onnxtax.bench",
    "run_ci": "onnxtax.ci",
    "load_config": "onnxtax.config",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'onnxtax' has no attribute {name!r}")
