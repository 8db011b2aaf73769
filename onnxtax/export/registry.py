"""The dynamo exporter's table of ONNX Script functions, built once per process.

`torch.onnx.export(dynamo=True)` rebuilds `ONNXRegistry.from_torchlib()` on every call: ~500
ONNX Script functions, each one's source read and parsed again (0.8-0.9 s on this host after
the first call, 2 s for the first). A process that exports more than once (`onnxtax ci` over
several paths, a library user's loop, the test suite) pays it each time for the same table.
Here the first build per (opset) is kept and each export gets a copy of it: the copy has its
own function lists, so a `custom_translation_table` registered into one export's registry never
reaches the next. If torch's private layout changes, nothing is patched and export runs as
torch ships it.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

_LOCK = threading.Lock()
_BUILT: dict[Any, Any] = {}


def keep_torchlib_registry() -> bool:
    """Patch `ONNXRegistry.from_torchlib` to build once per opset and hand out copies; True if patched."""
    try:
        from torch.onnx._internal.exporter import _registration
    except ImportError:
        return False
    registry_class = getattr(_registration, "ONNXRegistry", None)
    original = getattr(registry_class, "from_torchlib", None)
    if original is None or not hasattr(original, "__func__"):
        return False
    if getattr(original, "_onnxtax_kept", False):
        return True
    build = original.__func__
    try:
        probe = registry_class()
        if not isinstance(getattr(probe, "functions", None), dict):
            return False
    except Exception:  # noqa: BLE001 - an unknown layout: leave torch as it is
        return False

    def from_torchlib(cls, *args: Any, **kwargs: Any) -> Any:
        key = (cls, args, tuple(sorted(kwargs.items())))
        with _LOCK:
            built = _BUILT.get(key)
            if built is None:
                built = _BUILT[key] = build(cls, *args, **kwargs)
        registry = copy.copy(built)
        registry.functions = {target: list(metas) for target, metas in built.functions.items()}
        return registry

    from_torchlib._onnxtax_kept = True  # type: ignore[attr-defined]
    registry_class.from_torchlib = classmethod(from_torchlib)
    return True
