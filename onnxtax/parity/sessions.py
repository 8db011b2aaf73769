"""Parity's ONNX Runtime sessions: one per provider, the CPU one on the eager model's weights
when they are shared (onnxtax.core.sharing), each with where ORT placed the nodes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnxtax.core.artifact import Artifact
from onnxtax.core.defaults import MEMORY_FACTORS, PARITY_SHARE_MIN_BYTES
from onnxtax.core.errors import CheckFailed
from onnxtax.core.providers import ProviderRequest, ort_error_summary
from onnxtax.parity.report import ProviderResult


@dataclass
class LiveSession:
    result: ProviderResult
    session: Any


def open_parity_session(onnx_path: Path, req: ProviderRequest, shared: Any, **kwargs) -> Any:
    """A session on the eager model's weights for the CPU provider when they are shared, else from the file."""
    from onnxtax.core.providers import open_session

    if shared is not None and req.name == "CPUExecutionProvider":
        return shared.open(req, **kwargs)
    return open_session(onnx_path, req, **kwargs)


def weights_to_share(module: Any, artifact: Artifact, mode: str, requests: list[ProviderRequest]) -> Any:
    """SharedWeights for the CPU session, or None: mode never, no CPU provider, or (auto) small weights.
    Other providers compile or copy weights into their own memory: they load the file."""
    if mode == "never" or not any(r.name == "CPUExecutionProvider" for r in requests):
        return None
    from onnxtax.core.sharing import share_weights

    if mode == "auto" and sum(max(t.length, 0) for t in artifact.tensors.values()) < PARITY_SHARE_MIN_BYTES:
        return None
    try:
        # transposed: MatMul weights the exporter stored as W^T become the parameters' memory, read by
        # the eager model through transposed views (given back by SharedWeights.views.restore())
        shared = share_weights(artifact, module, transposed=True)
    except (OSError, ValueError):  # a proto the wire walker cannot read: the session loads the file
        return None
    return shared if shared.names else None


def check_memory(meter: Any, artifact: Artifact, mode: str, requests: list[ProviderRequest]) -> None:
    """The preflight, before the model is loaded: the CPU session shares the weights as
    weights_to_share decides; every other provider's session holds its own copy."""
    weights = artifact.weights_bytes
    cpu = any(r.name == "CPUExecutionProvider" for r in requests)
    shares = cpu and (mode == "always" or (mode == "auto" and (weights or 0) >= PARITY_SHARE_MIN_BYTES))
    others = sum(1 for r in requests if r.name != "CPUExecutionProvider")
    meter.check(weights, "parity" if shares else "parity-unshared",
                extra_factor=others * MEMORY_FACTORS["parity-provider"])


def open_sessions(artifact: Artifact, requests: list[ProviderRequest], *, opt_level: str, threads: int | None,
                  shared: Any = None) -> list[LiveSession | ProviderResult]:
    from onnxtax.core.providers import placement_of

    out: list[LiveSession | ProviderResult] = []
    for req in requests:
        pr = ProviderResult(req)
        t0 = time.perf_counter()
        try:
            session = open_parity_session(artifact.path, req, shared, opt_level=opt_level, threads=threads,
                                          record_placement=True)
        except CheckFailed as exc:
            line, node = ort_error_summary(exc.__cause__ or exc)
            pr.status = "error"
            pr.reason = f"session could not load: {line}" + (f" (node {node})" if node else "")
            out.append(pr)
            continue
        pr.session_load_s = time.perf_counter() - t0
        pr.placement = placement_of(session, req.name)
        out.append(LiveSession(pr, session))
    return out
