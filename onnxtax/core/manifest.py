"""The manifest written beside every exported model: what it is, how it was made,
and the checksums that `onnxtax verify` recomputes.

Schema (format_version 1), keys stable:
{
  "format_version": 1,
  "created_utc": "2026-11-22T05:00:00Z",
  "model":    {"spec": "examples/fraud_detector.py:FraudDetector", "class_name": "FraudDetector", "source_file": "..."},
  "source":   null | {"file": "/abs/fraud_detector.py", "sha256": "...", "git": null | {"commit": "...",
               "dirty": false, "path": "examples/fraud_detector.py", "tracked": true}}   (core.source, at export)
  "artifact": {"file": "fraud.onnx", "sha256": "...", "size_bytes": 34567,
               "external_data": [{"file": "fraud.onnx.data", "sha256": "...", "size_bytes": 123}]},
  "opset": 18, "ir_version": 10,
  "exporter": {"name": "dynamo", "options": {...}, "reason": "..."},
  "versions": {"python": "3.11.7", "torch": "...", "onnx": "...", "onnxruntime": "...", "onnxscript": "...", "onnxtax": "..."},
  "inputs":  [{"name": "x", "dims": ["batch", 128], "dtype": "float32"}],
  "outputs": [{"name": "prob", "dims": ["batch", 1], "dtype": "float32"}],
  "dynamic_axes": {"batch": {"export_size": 3, "used_by": [["x", 0]]}},
  "assumed_ranges": {"batch": {"min": null, "max": 32}},   (ranges torch.export assumed; min/max null = open)
  "domains": {"x": "normal, ...", "attention_mask": "all ones (default for mask-like names)"},
  "checks": [{"name": "onnx.checker", "passed": true, "detail": "..."}],
  "warnings": ["..."],
  "target_runtimes": [] | [{"series": "1.16", "latest": "1.16.3", "max_opset": 19, "max_ml_opset": 3,
                            "max_ir_version": 9, "source": "measured"}],       (export --target-ort)
  "runtime_matrix": [] | [{"ort": "1.16.3", "provider": "CPUExecutionProvider", "status": "passed",
                           "message": null}],        (where the file was run before it was written)
  "benchmark": null | {...}     (filled by `onnxtax bench --record`)
  "quantization": {...}         (INT8 artifacts only: how `onnxtax quantize` built and approved it)
  "provenance": {"file": "fraud.provenance.json", "sha256": "...",     (written by `onnxtax sign`,
                 "predicate_type": "https://slsa.dev/provenance/v1"},    before it signs; see verify.attest)
  "signature":  {"method": "key", "file": "fraud.sig", "key_fingerprint": "sha256:...", "signed_utc": "...",
                 "covers": ["fraud.onnx", "fraud.onnx.data", "fraud.manifest.json", "fraud.provenance.json"],
                 "library": "model-signing 1.1.1"}     (the manifest is signed with this record in it)
}
"""

from __future__ import annotations

import json
from pathlib import Path

from onnxtax.core.errors import ManifestError
from onnxtax.core.files import write_output

FORMAT_VERSION = 1


def manifest_path_for(model_path: str | Path) -> Path:
    """`model.onnx` -> `model.manifest.json`."""
    p = Path(model_path)
    stem = p.name[:-5] if p.name.endswith(".onnx") else p.name
    return p.with_name(f"{stem}.manifest.json")


def signature_path_for(model_path: str | Path) -> Path:
    """`model.onnx` -> `model.sig` (written by `onnxtax sign`)."""
    return manifest_path_for(model_path).with_name(manifest_path_for(model_path).name[:-len(".manifest.json")] + ".sig")


def provenance_path_for(model_path: str | Path) -> Path:
    """`model.onnx` -> `model.provenance.json` (written by `onnxtax sign`)."""
    m = manifest_path_for(model_path)
    return m.with_name(m.name[:-len(".manifest.json")] + ".provenance.json")


def read_manifest(model_path: str | Path, *, required: bool = True) -> dict | None:
    path = manifest_path_for(model_path)
    if not path.is_file():
        if required:
            raise ManifestError(f"no manifest at {path}", "export with `onnxtax export` to write one")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ManifestError(f"manifest {path} is unreadable: {exc}", "re-export the model to write a new one") from exc
    if not isinstance(data, dict) or "artifact" not in data:
        raise ManifestError(f"manifest {path} is not an onnxtax manifest", "re-export the model to write a new one")
    return data


def update_manifest(model_path: str | Path, key: str, value: object) -> Path:
    """Set one top-level key (e.g. `benchmark`) and rewrite atomically; checksums untouched."""
    data = read_manifest(model_path)
    assert data is not None
    data[key] = value
    return write_output(manifest_path_for(model_path), data, "the manifest")


def export_sizes_of(manifest: dict | None) -> dict[str, int]:
    """The example size each dynamic axis had while exporting (`dynamic_axes[sym].export_size`);
    axes without a recorded integer size are left out."""
    axes = (manifest or {}).get("dynamic_axes") or {}
    return {sym: info["export_size"] for sym, info in axes.items()
            if isinstance(info, dict) and isinstance(info.get("export_size"), int)}


def assumed_text(sym: str, bounds: dict) -> str:
    """{"min": 2, "max": 32} -> "batch >= 2 and batch <= 32" (the exporter's own words)."""
    parts = ([f"{sym} >= {bounds['min']}"] if bounds.get("min") is not None else []) + (
        [f"{sym} <= {bounds['max']}"] if bounds.get("max") is not None else [])
    return " and ".join(parts)


def assumed_ranges_of(manifest: dict | None) -> dict[str, dict]:
    """The ranges torch.export assumed per dynamic axis ({"min": int|None, "max": int|None}),
    where the artifact is unverified; manifests written before the key existed give {}."""
    ranges = (manifest or {}).get("assumed_ranges") or {}
    out: dict[str, dict] = {}
    for sym, bounds in ranges.items():
        if not isinstance(bounds, dict):
            continue
        lo, hi = bounds.get("min"), bounds.get("max")
        lo = lo if isinstance(lo, int) and lo > 1 else None
        hi = hi if isinstance(hi, int) else None
        if lo is not None or hi is not None:
            out[sym] = {"min": lo, "max": hi}
    return out
