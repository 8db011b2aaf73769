"""`onnxtax lint-ops`: what in an ONNX graph (and the PyTorch code behind it) will not
run, or not run the same, where the model is deployed.

`onnx.checker` passes a node in an unknown domain that ONNX Runtime then refuses to
load, and says nothing about opsets a deployment runtime lacks, providers falling back
to CPU, float64 or sizes baked in at export. Each rule here asks the real runtime where
one is involved (ORT sessions, ORT's node placement) instead of keeping op lists.

Rules (stable ids, default severity):
  control-flow       warning  every If/Loop/Scan, nested ones too, and what feeds an If's condition
  custom-op          error    a node outside the standard ONNX domains that the installed ORT cannot load;
                              warning when it loads (com.microsoft contrib ops are ORT-only);
                              info for calls to model-local functions
  opset              error    default-domain opset (or an op's version) above --target-opset or above
                              what the installed ORT loads
  ir-version         error    IR version above --target-ir or above what the installed ORT loads
  target-runtime     error    (--target-ort) IR version, opsets or ops the target onnxruntime release refuses
                              (onnxtax.core.ort_compat's table: nothing is installed)
  runtime-load       error    the installed ORT refuses the model for another reason (message mapped to the node)
  provider-fallback  warning  nodes ORT assigns away from a requested provider; error when it runs none;
                              info for providers not on this host ("not checked here", never guessed)
  float64            warning  double graph inputs, outputs, initializers, constants, casts
  baked-shape        warning  static inputs/outputs where the manifest declares dynamic axes; Reshape/Expand/
                              Tile/ConstantOfShape shapes holding an export-time size
  source-data-dependent-branch  error    (--source) Python control flow on a tensor's value
  source-tensor-to-python       warning  (--source) .item(), int(t), float(t), .tolist(), .numpy()
  source-custom-op              error    (--source) torch.library ops with no ONNX translation;
                                         warning for autograd.Function without symbolic()
  source-trace                  error    (--source) the model could not be traced at all, so no source rule ran

JSON schema of `LintReport.to_dict()` (format_version 1, keys stable):
{
  "format_version": 1,
  "model": "model.onnx",
  "passed": false,                       # nothing at/above fail_on outside --allow
  "fail_on": "error",
  "summary": {"error": 1, "warning": 3, "info": 0, "allowed": 1, "failing": 1,
              "by_rule": {"custom-op": 1, "float64": 3}},
  "model_info": {"ir_version": 10, "opsets": {"": 18, "my.domain": 1}, "producer": "pytorch 2.13",
                 "nodes": 12, "subgraphs": 2, "functions": 0},
  "runtime": {"package": "onnxruntime", "version": "1.31.1", "max_ir_version": 13, "max_opset": 26,
              "loads_model": true, "load_error": null},
  "targets": {"opset": 17, "ir_version": 9, "ort": null | {"series": "1.16", "max_opset": 19, ...}},
  "providers": {"checked": [{"provider": "OpenVINOExecutionProvider", "label": "openvino:device_type=CPU",
                             "placement": {...providers.Placement.to_dict()...}}],
                "not_checked": ["cuda"]},
  "source": null | {"spec": "...", "file": "...", "seconds": 1.9, "steps": {"draft_export": "ok", ...}},
  "rules_run": ["control-flow", ...],
  "allow": ["float64", "custom-op:node_3"],
  "notes": ["no manifest beside the model: ..."],
  "seconds": 0.41,
  "findings": [{"rule": "custom-op", "severity": "error", "message": "...", "hint": "...",
                "node": "n1", "op_type": "MyOp", "domain": "my.domain", "subgraph": null,
                "source_location": "model.py:12", "allowed": false, "details": {...}}]
}
`node` is a node name, or a graph input/output/initializer name for value findings.
`subgraph` is the path of nested graphs, e.g. "node_cond__0/then_branch".

Modules: findings (rules, Finding, LintReport, allow list), graph (walking nodes and
subgraphs), rules (graph rules), source (--source rules), sarif (SARIF output and ci's merge),
run (lint_model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxtax.core.faces import lazy_face

_NAMES = {"FORMAT_VERSION": "findings", "RULES": "findings", "SEVERITIES": "findings", "AllowEntry": "findings",
          "Finding": "findings", "LintReport": "findings", "Rule": "findings", "check_fail_on": "findings",
          "parse_allow": "findings", "GRAPH_RULES": "run", "lint_model": "run", "LintOptions": "options"}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_face(__name__, _NAMES)

if TYPE_CHECKING:
    from onnxtax.lint.findings import (FORMAT_VERSION, RULES, SEVERITIES, AllowEntry, Finding, LintReport, Rule,
                                       check_fail_on, parse_allow)
    from onnxtax.lint.options import LintOptions
    from onnxtax.lint.run import GRAPH_RULES, lint_model
