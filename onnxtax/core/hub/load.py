"""What an hf:/st: model derives, for the stages (onnxtax.core.loading builds the LoadedModel
itself, its derivation kept on `LoadedModel.hub`)."""

from __future__ import annotations

from onnxtax.core.hub.build import HubModel, derive_hub


def hub_of(model: object) -> HubModel | None:
    """What a hub model derives: from a LoadedModel built from one, or from an hf:/st: spec string
    (derived without loading weights); None for any other model."""
    from onnxtax.core.hub.spec import is_hub_spec

    hub = getattr(model, "hub", None)
    if hub is not None:
        return hub
    return derive_hub(model) if is_hub_spec(model) else None


def with_derived(model: object, specs: list, ranges: dict) -> tuple[list, dict]:
    """(inputs, value ranges) for a stage: the given inputs, else the hub model's derived ones; the
    derived ranges of the inputs present, under the given ones (a --range wins)."""
    hub = hub_of(model)
    if hub is None:
        return specs, ranges
    specs = list(specs) if specs else list(hub.inputs)
    names = {s.name for s in specs}
    return specs, {**{k: v for k, v in hub.ranges.items() if k in names}, **ranges}
