"""Is this the model the artifact was exported from?

`onnxtax bench M.py:BNNet mlp.onnx` once benchmarked a different model (3 outputs) against the
file exported from `MLP` (1 output), and called the ratio the Python tax. Export records what
identifies the source in the manifest: its class and the names, shapes and dtypes of its
parameters and buffers (not their values: a retrained model is still the same model, and parity
is what tells whether its values still match). Every stage that takes a SPEC and an artifact
checks the SPEC's model against that record before any work; for an artifact onnxtax did not
write, the graph's inputs and outputs are what can be checked.
"""

from __future__ import annotations

import hashlib
from typing import Any

from onnxtax.core.errors import InputSpecError

# A manifest lists every tensor up to this many (a transformer's few hundred); beyond, the digest alone.
LISTED_TENSORS = 4000


def module_identity(module: Any) -> dict:
    """{"class_name", "tensors", "digest", "state": [[name, shape, dtype], ...] | None} of a module's
    parameters and persistent buffers."""
    state = [[name, list(t.shape), str(t.dtype).replace("torch.", "")]
             for name, t in module.state_dict(keep_vars=True).items()]
    digest = hashlib.sha256("\n".join(f"{n}:{s}:{d}" for n, s, d in state).encode()).hexdigest()
    return {"class_name": type(module).__name__, "tensors": len(state), "digest": digest,
            "state": state if len(state) <= LISTED_TENSORS else None}


def check_model_matches(module: Any, manifest: dict | None, artifact_name: str, spec: str) -> None:
    """Refuse (exit 2, naming what differs) a SPEC whose model is not the artifact's: another class
    with other parameters, or the same class with parameters of other names, shapes or dtypes."""
    recorded = ((manifest or {}).get("model") or {}).get("identity")
    if not isinstance(recorded, dict) or "digest" not in recorded:
        return  # not written by onnxtax (or before it recorded this): the graph's inputs are checked instead
    mine = module_identity(module)
    if mine["digest"] == recorded["digest"]:
        return
    differences = _differences(mine, recorded)
    exported = ((manifest or {}).get("model") or {}).get("spec") or recorded.get("class_name")
    raise InputSpecError(
        f"{spec} is not the model {artifact_name} was exported from ({exported}): " + "; ".join(differences[:3])
        + (f" (+{len(differences) - 3} more)" if len(differences) > 3 else ""),
        f"give the SPEC {artifact_name} was exported from, or export this model to its own file")


def _differences(mine: dict, recorded: dict) -> list[str]:
    out = []
    if mine["class_name"] != recorded.get("class_name"):
        out.append(f"class {mine['class_name']} here, {recorded.get('class_name')} there")
    if recorded.get("state") is None or mine.get("state") is None:
        out.append(f"{mine['tensors']} parameter and buffer tensors here, {recorded.get('tensors')} there")
        return out
    theirs = {n: (s, d) for n, s, d in recorded["state"]}
    ours = {n: (s, d) for n, s, d in mine["state"]}
    for name, (shape, dtype) in ours.items():
        if name not in theirs:
            out.append(f"'{name}' {shape} is not in the artifact's model")
        elif theirs[name] != (shape, dtype):
            out.append(f"'{name}' is {dtype}{shape} here, {theirs[name][1]}{theirs[name][0]} there")
    out += [f"'{name}' {theirs[name][0]} of the artifact's model is missing here" for name in theirs if name not in ours]
    return out or [f"{mine['tensors']} tensors here, {recorded.get('tensors')} there"]


def check_outputs_match(count: int, output_names: list[str], artifact_name: str, spec: str) -> None:
    """The SPEC's forward returns as many tensors as the graph has outputs (for any artifact)."""
    if count != len(output_names):
        raise InputSpecError(f"{spec} returns {count} tensor(s), {artifact_name} has {len(output_names)} output(s) "
                             f"({', '.join(output_names)}): it is not the model the file was exported from",
                             f"give the SPEC {artifact_name} was exported from")


def user_module(module: Any) -> Any:
    """The user's model behind onnxtax's keyword-passing wrapper (onnxtax.core.loading), else itself."""
    return module.inner if getattr(type(module), "passes_by_name", False) else module


def state_writes(module: Any, versions: dict[str, int]) -> list[str]:
    """Names of the parameters and buffers a forward call wrote (their version counters moved)."""
    return [name for name, t in user_module(module).state_dict(keep_vars=True).items()
            if t._version != versions.get(name)]


def state_versions(module: Any) -> dict[str, int]:
    return {name: t._version for name, t in user_module(module).state_dict(keep_vars=True).items()}


def check_stateless(module: Any, versions: dict[str, int], first: list, call) -> None:
    """After a first forward call (`first`: its flattened outputs; `versions` taken before it):
    when it wrote a parameter or buffer, run `call` again on the same inputs; outputs that moved
    mean a model that keeps state (exit 2). A write that changes nothing (`w.mul_(1)`, a cache
    refilled with the same values) is left to the stages that share weights to report."""
    written = state_writes(module, versions)
    if not written:
        return
    import torch

    second = call()
    same = len(second) == len(first) and all(
        torch.equal(torch.as_tensor(a[1] if isinstance(a, tuple) else a), torch.as_tensor(b[1] if isinstance(b, tuple) else b))
        for a, b in zip(first, second))
    if not same:
        refuse_stateful(module, written)


def refuse_stateful(module: Any, written: list[str]) -> None:
    """A forward that writes its own state answers each call from the ones before it: no graph can
    match it, and no "frozen branch" is to blame. Exit 2 naming what it writes, and how to proceed."""
    if not written:
        return
    params = {n for n, _ in user_module(module).named_parameters()}
    kind = "parameter" if written[0] in params else "buffer"
    more = f" (and {len(written) - 1} more)" if len(written) > 1 else ""
    raise InputSpecError(f"forward writes {kind} `{written[0]}`{more} and answers the same inputs differently on "
                         "the next call: no exported graph can compute what it computes",
                         "export a stateless forward (update the state outside forward(), or only under "
                         "`if self.training`), or pass the state as an input and return the new state as an output")
