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

from onnxtax.core.version import VERSION as __version__

_LAZY = {
    # stages, their options and their reports (each name from its stage's face)
    "export_model": "onnxtax.export", "ExportResult": "onnxtax.export", "ExportOptions": "onnxtax.export",
    "lint_model": "onnxtax.lint", "LintReport": "onnxtax.lint", "LintOptions": "onnxtax.lint",
    "check_parity": "onnxtax.parity", "ParityReport": "onnxtax.parity", "ParityOptions": "onnxtax.parity",
    "Localization": "onnxtax.parity",  # with onnxtax.parity.localize(...), the search
    "compare_arrays": "onnxtax.core",
    "verify_artifact": "onnxtax.verify", "VerifyReport": "onnxtax.verify",
    "run_bench": "onnxtax.bench", "BenchReport": "onnxtax.bench", "BenchOptions": "onnxtax.bench",
    "quantize_model": "onnxtax.quantize", "check_quantized": "onnxtax.quantize", "QuantizeReport": "onnxtax.quantize",
    "QuantizeOptions": "onnxtax.quantize",
    "check_runtimes": "onnxtax.runtimes", "RuntimeMatrixReport": "onnxtax.runtimes",
    "RuntimesOptions": "onnxtax.runtimes",
    "run_ci": "onnxtax.ci", "CiReport": "onnxtax.ci", "load_config": "onnxtax.ci",
    # the parts every stage is built from (onnxtax.core)
    "load_model": "onnxtax.core", "LoadedModel": "onnxtax.core",
    "open_artifact": "onnxtax.core", "Artifact": "onnxtax.core",
    "InputSpec": "onnxtax.core", "parse_input_specs": "onnxtax.core", "make_inputs": "onnxtax.core",
    "resolve_inputs": "onnxtax.core", "ResolvedInputs": "onnxtax.core",
    "open_session": "onnxtax.core", "resolve_providers": "onnxtax.core",
    "host_providers": "onnxtax.core", "ProviderRequest": "onnxtax.core",
    "Progress": "onnxtax.core",
    # errors: OnnxtaxError and its subclasses are usage errors (exit 2); CheckFailed a failed check (exit 1)
    "OnnxtaxError": "onnxtax.core", "InputSpecError": "onnxtax.core", "LoadError": "onnxtax.core",
    "ConfigError": "onnxtax.core", "ProviderError": "onnxtax.core", "ManifestError": "onnxtax.core",
    "CheckFailed": "onnxtax.core",
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:
    from onnxtax.bench import BenchOptions, BenchReport, run_bench
    from onnxtax.ci import CiReport, load_config, run_ci
    from onnxtax.core import (Artifact, CheckFailed, ConfigError, InputSpec, InputSpecError, LoadedModel, LoadError,
                              ManifestError, OnnxtaxError, Progress, ProviderError, ProviderRequest, ResolvedInputs,
                              compare_arrays, host_providers, load_model, make_inputs, open_artifact, open_session,
                              parse_input_specs, resolve_inputs, resolve_providers)
    from onnxtax.export import ExportOptions, ExportResult, export_model
    from onnxtax.lint import LintOptions, LintReport, lint_model
    from onnxtax.parity import Localization, ParityOptions, ParityReport, check_parity
    from onnxtax.quantize import QuantizeOptions, QuantizeReport, check_quantized, quantize_model
    from onnxtax.runtimes import RuntimeMatrixReport, RuntimesOptions, check_runtimes
    from onnxtax.verify import VerifyReport, verify_artifact


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'onnxtax' has no attribute {name!r}")
