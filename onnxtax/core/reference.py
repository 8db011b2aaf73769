"""The eager PyTorch model as the reference every comparison is made against (parity, the
runtime matrix, quantization segments): called positionally in spec order, in eval mode under
inference_mode, its outputs flattened in the exporter's order."""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxtax.core.errors import InputSpecError, OnnxtaxError
from onnxtax.core.specs import InputSpec, SampleRecipe, ValueRange, is_integer


class EagerReference:
    """The eager model, in eval mode under inference_mode, called positionally in spec order."""

    def __init__(self, module: Any, specs: list[InputSpec], ranges: dict[str, ValueRange] | None = None):
        self.module = module
        self.specs = specs
        self.ranges = ranges or {}
        self.paths: list[str] | None = None
        self.dtypes: list[str] = []

    def __call__(self, arrays: dict[str, np.ndarray], where: str, data_file: str | None = None
                 ) -> list[np.ndarray]:
        import torch

        from onnxtax.core.identity import check_stateless, state_versions
        from onnxtax.core.inputs import flatten_outputs, to_numpy, torch_tensors

        tensors = torch_tensors(self.specs, arrays)
        versions = state_versions(self.module) if self.paths is None else None  # the first call: does it keep state?
        try:
            with torch.inference_mode():
                result = self.module(*tensors)
        except Exception as exc:  # noqa: BLE001 - any error in user code at a chosen shape
            shapes = ", ".join(f"{s.name}{list(arrays[s.name].shape)}" for s in self.specs)
            hint = inputs_hint(self.specs, self.ranges, data_file)
            raise InputSpecError(f"the source model raised {type(exc).__name__}: {str(exc).strip()[:300]} "
                                 f"at {where} ({shapes})", hint) from exc
        if versions is not None:
            def again():
                with torch.inference_mode():
                    return flatten_outputs(self.module(*tensors))

            check_stateless(self.module, versions, flatten_outputs(result), again)
        flat = flatten_outputs(result)  # the exporter's order and names, shared on purpose
        if not flat:
            raise InputSpecError(f"the source model returns no tensors at {where}",
                                 "forward() must return a tensor, or a tuple/list/dict of them")
        self.paths = [p for p, _ in flat]
        self.dtypes = [str(t.dtype).replace("torch.", "") for _, t in flat]  # bfloat16 arrives as float32
        return [to_numpy(t) for _, t in flat]

    def noise(self, arrays: dict[str, np.ndarray], expected: list[np.ndarray]) -> tuple[list[float | None], str | None]:
        """The model's own rounding noise per output on these arrays (`expected`: its float32
        outputs there), relative to each output's RMS; and why it is unknown when it is."""
        from onnxtax.core.inputs import torch_tensors
        from onnxtax.core.noise import float64_outputs, relative_noise

        exact, why = float64_outputs(self.module, torch_tensors(self.specs, arrays))
        return relative_noise(expected, exact), why

    def error_at(self, arrays: dict[str, np.ndarray]) -> str | None:
        """None when the source runs on these arrays, else its error in one line."""
        try:
            self(arrays, "a trial")
        except InputSpecError as exc:
            return exc.message
        return None


def inputs_hint(specs: list[InputSpec], ranges: dict[str, ValueRange], data_file: str | None = None) -> str:
    """What to check when the source model rejects the inputs it was given (the hint of every stage)."""
    if data_file is not None:
        return (f"the arrays in {data_file} do not fit the model (values or sizes it rejects, e.g. a token id "
                "at or above the vocabulary size): fix the file, or check it with the model in Python first")
    hint = ("check that the inputs fit the model (--input NAME:DIMS:DTYPE) and choose sizes it accepts "
            "with --dim SYMBOL=V1,V2")
    ints = [s for s in specs if is_integer(s)]
    if ints:
        recipe = SampleRecipe(0, ranges)
        drawn = ", ".join(f"{s.name} from {recipe.describe(s)}" for s in ints)
        hint += f"; integer inputs are drawn as: {drawn} (set them with --range NAME=LOW:HIGH, HIGH exclusive)"
    return hint


def same_outputs(first: list[np.ndarray], second: list[np.ndarray]) -> tuple[bool, str]:
    if len(first) != len(second):
        return False, f"{len(first)} outputs, then {len(second)}"
    for i, (a, b) in enumerate(zip(first, second)):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False, f"output {i} is {a.dtype}{list(a.shape)}, then {b.dtype}{list(b.shape)}"
        equal = np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
        if not equal:
            diff = np.nanmax(np.abs(a.astype(np.float64) - b.astype(np.float64))) if a.size else 0.0
            return False, f"output {i} differs by up to {diff:.3g} between two identical calls"
    return True, ""


def refuse_nondeterministic(source: EagerReference, arrays: dict, where: str, expected: list) -> None:
    """Call the source again on the same arrays: a different answer makes every comparison meaningless."""
    same, detail = same_outputs(expected, source(arrays, where))
    if not same:
        raise OnnxtaxError(
            f"the source model is not deterministic ({where}): {detail}; parity against a model that "
            "answers the same input differently is meaningless",
            "remove randomness from forward() (dropout called with training=True, torch.rand*, "
            "sampling) and keep dropout/batch-norm in eval mode")
