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
    # stages and their reports
    "export_model": "onnxtax.export.run", "ExportResult": "onnxtax.export.run",
    "lint_model": "onnxtax.lint", "LintReport": "onnxtax.lint",
    "check_parity": "onnxtax.parity.run", "ParityReport": "onnxtax.parity.run", "compare_arrays": "onnxtax.core.compare",
    "Localization": "onnxtax.parity.localize",  # onnxtax.parity.localize.localize(...): the module's name, not re-exported
    "verify_artifact": "onnxtax.core.manifest", "VerifyReport": "onnxtax.core.manifest",
    "run_bench": "onnxtax.bench.run", "BenchReport": "onnxtax.bench.run",
    "quantize_model": "onnxtax.quantize.run", "check_quantized": "onnxtax.quantize.run", "QuantizeReport": "onnxtax.quantize.run",
    "check_runtimes": "onnxtax.runtimes.matrix", "RuntimeMatrixReport": "onnxtax.runtimes.matrix",
    "run_ci": "onnxtax.ci.run", "CiReport": "onnxtax.ci.run", "load_config": "onnxtax.ci.config",
    # the parts every stage is built from
    "load_model": "onnxtax.core.loading", "LoadedModel": "onnxtax.core.loading",
    "InputSpec": "onnxtax.core.specs", "parse_input_specs": "onnxtax.core.specs", "make_inputs": "onnxtax.core.specs",
    "resolve_inputs": "onnxtax.core.inputs", "ResolvedInputs": "onnxtax.core.inputs",
    "open_session": "onnxtax.core.providers", "resolve_providers": "onnxtax.core.providers",
    "host_providers": "onnxtax.core.providers", "ProviderRequest": "onnxtax.core.providers",
    "Progress": "onnxtax.core.progress",
    # errors: OnnxtaxError and its subclasses are usage errors (exit 2); CheckFailed a failed check (exit 1)
    "OnnxtaxError": "onnxtax.core.errors", "InputSpecError": "onnxtax.core.errors", "LoadError": "onnxtax.core.errors",
    "ConfigError": "onnxtax.core.errors", "ProviderError": "onnxtax.core.errors", "ManifestError": "onnxtax.core.errors",
    "CheckFailed": "onnxtax.core.errors",
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:
    from onnxtax.bench.run import BenchReport, run_bench
    from onnxtax.ci.run import CiReport, run_ci
    from onnxtax.ci.config import load_config
    from onnxtax.core.errors import (CheckFailed, ConfigError, InputSpecError, LoadError, ManifestError, OnnxtaxError,
                                ProviderError)
    from onnxtax.export.run import ExportResult, export_model
    from onnxtax.core.inputs import ResolvedInputs, resolve_inputs
    from onnxtax.lint import LintReport, lint_model
    from onnxtax.core.loading import LoadedModel, load_model
    from onnxtax.parity.localize import Localization
    from onnxtax.core.manifest import VerifyReport, verify_artifact
    from onnxtax.core.compare import compare_arrays
    from onnxtax.parity.run import ParityReport, check_parity
    from onnxtax.core.progress import Progress
    from onnxtax.core.providers import ProviderRequest, host_providers, open_session, resolve_providers
    from onnxtax.quantize.run import QuantizeReport, check_quantized, quantize_model
    from onnxtax.runtimes.matrix import RuntimeMatrixReport, check_runtimes
    from onnxtax.core.specs import InputSpec, make_inputs, parse_input_specs


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'onnxtax' has no attribute {name!r}")
