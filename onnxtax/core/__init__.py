"""What every stage shares: the one place for each thing a stage needs.

  errors       the user-error root (exit 2) and CheckFailed (exit 1)
  defaults     every default the library, the config and --help share
  specs        `NAME:DIMS[:DTYPE]` input specs, value ranges, seeded samples
  loading      a model spec -> LoadedModel (built once)
  artifact     an exported model opened once: manifest, graph without weights, inputs, weights' size
  manifest     the manifest beside an artifact: read, write, the facts it records
  skeleton     an ONNX graph read without its weights' bytes
  sharing      an ORT session on the eager model's own parameter memory
  transposed   weights the exporter stored transposed, shared through transposed views
  options      the base of every stage's options object
  inputs       which arrays a graph takes and which spec feeds which input
  providers    execution providers, sessions, where ORT placed each node
  ort_compat   what each onnxruntime release loads
  compare      the one comparison rule (parity, export's smoke run, the runtime matrix)
  reference    the eager model as the reference every comparison is made against
  report       the result contract (Verdict), JSON-ready values, sizes, host facts
  files        atomic outputs, staging folders, output paths checked before the work
  memory       a stage's memory: the preflight and the peak it reached
  frames       which frame of a stack trace is the user's
  progress     the one progress contract between a stage and whoever shows it
  child        one function run in a fresh interpreter
  faces        lazy package faces

Nothing here imports a stage (export, lint, parity, bench, quantize, runtimes, ci) or the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxtax.core.faces import lazy_face

_NAMES = {
    "OnnxtaxError": "errors", "InputSpecError": "errors", "LoadError": "errors", "ConfigError": "errors",
    "ProviderError": "errors", "ManifestError": "errors", "CheckFailed": "errors",
    "InputSpec": "specs", "ValueRange": "specs", "parse_input_specs": "specs", "make_inputs": "specs",
    "LoadedModel": "loading", "load_model": "loading", "resolve_model": "loading",
    "Artifact": "artifact", "open_artifact": "artifact",
    "ResolvedInputs": "inputs", "resolve_inputs": "inputs",
    "ProviderRequest": "providers", "open_session": "providers", "resolve_providers": "providers",
    "host_providers": "providers",
    "compare_arrays": "compare", "OutputStats": "compare",
    "EagerReference": "reference",
    "Verdict": "report",
    "Progress": "progress",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_face(__name__, _NAMES)

if TYPE_CHECKING:
    from onnxtax.core.artifact import Artifact, open_artifact
    from onnxtax.core.compare import OutputStats, compare_arrays
    from onnxtax.core.errors import (CheckFailed, ConfigError, InputSpecError, LoadError, ManifestError,
                                     OnnxtaxError, ProviderError)
    from onnxtax.core.inputs import ResolvedInputs, resolve_inputs
    from onnxtax.core.loading import LoadedModel, load_model, resolve_model
    from onnxtax.core.progress import Progress
    from onnxtax.core.providers import ProviderRequest, host_providers, open_session, resolve_providers
    from onnxtax.core.reference import EagerReference
    from onnxtax.core.report import Verdict
    from onnxtax.core.specs import InputSpec, ValueRange, make_inputs, parse_input_specs
