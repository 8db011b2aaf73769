"""onnxtax: PyTorch model -> verified ONNX artifact that ONNX Runtime serves natively.

The public API, for scripts that reuse the parts as well as run the whole:

    from onnxtax import load_model, resolve_inputs, export_model, check_parity

    model = load_model("examples/fraud_detector.py:FraudDetector")
    result = export_model(model, "fraud.onnx", ["x:batch,128"])
    inputs = resolve_inputs("fraud.onnx")              # from the manifest beside it
    report = check_parity(model, "fraud.onnx", inputs)  # truthy when it passed; report.exit_code

Names are imported lazily so that `import onnxtax` (and `onnxtax --help`) does not pay for
torch or onnxruntime; the TYPE_CHECKING block shows them to type checkers and editors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {
    # stages and their reports
    "export_model": "onnxtax.export", "ExportResult": "onnxtax.export",
    "lint_model": "onnxtax.lint", "LintReport": "onnxtax.lint",
    "check_parity": "onnxtax.parity", "ParityReport": "onnxtax.parity", "compare_arrays": "onnxtax.compare",
    "Localization": "onnxtax.localize",  # onnxtax.localize.localize(...): the module's name, not re-exported
    "verify_artifact": "onnxtax.manifest", "VerifyReport": "onnxtax.manifest",
    "run_bench": "onnxtax.bench", "BenchReport": "onnxtax.bench",
    "quantize_model": "onnxtax.quantize", "check_quantized": "onnxtax.quantize", "QuantizeReport": "onnxtax.quantize",
    "check_runtimes": "onnxtax.runtimes", "RuntimeMatrixReport": "onnxtax.runtimes",
    "run_ci": "onnxtax.ci", "CiReport": "onnxtax.ci", "load_config": "onnxtax.config",
    # the parts every stage is built from
    "load_model": "onnxtax.loading", "LoadedModel": "onnxtax.loading",
    "InputSpec": "onnxtax.specs", "parse_input_specs": "onnxtax.specs", "make_inputs": "onnxtax.specs",
    "resolve_inputs": "onnxtax.inputs", "ResolvedInputs": "onnxtax.inputs",
    "open_session": "onnxtax.providers", "resolve_providers": "onnxtax.providers",
    "host_providers": "onnxtax.providers", "ProviderRequest": "onnxtax.providers",
    "Progress": "onnxtax.progress",
    # errors: OnnxtaxError and its subclasses are usage errors (exit 2); CheckFailed a failed check (exit 1)
    "OnnxtaxError": "onnxtax.errors", "InputSpecError": "onnxtax.errors", "LoadError": "onnxtax.errors",
    "ConfigError": "onnxtax.errors", "ProviderError": "onnxtax.errors", "ManifestError": "onnxtax.errors",
    "CheckFailed": "onnxtax.errors",
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:
    from onnxtax.bench import BenchReport, run_bench
    from onnxtax.ci import CiReport, run_ci
    from onnxtax.config import load_config
    from onnxtax.errors import (CheckFailed, ConfigError, InputSpecError, LoadError, ManifestError, OnnxtaxError,
                                ProviderError)
    from onnxtax.export import ExportResult, export_model
    from onnxtax.inputs import ResolvedInputs, resolve_inputs
    from onnxtax.lint import LintReport, lint_model
    from onnxtax.loading import LoadedModel, load_model
    from onnxtax.localize import Localization
    from onnxtax.manifest import VerifyReport, verify_artifact
    from onnxtax.compare import compare_arrays
    from onnxtax.parity import ParityReport, check_parity
    from onnxtax.progress import Progress
    from onnxtax.providers import ProviderRequest, host_providers, open_session, resolve_providers
    from onnxtax.quantize import QuantizeReport, check_quantized, quantize_model
    from onnxtax.runtimes import RuntimeMatrixReport, check_runtimes
    from onnxtax.specs import InputSpec, make_inputs, parse_input_specs


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'onnxtax' has no attribute {name!r}")
