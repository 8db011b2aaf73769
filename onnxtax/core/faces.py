"""Package faces that import nothing until a name is used.

Every stage package (`onnxtax.parity`, `onnxtax.bench`, ...) hands on its public names from
the modules that define them. Importing them eagerly would make `import onnxtax.bench.child`
(the cold-start child, which must pay only its own imports) and `onnxtax --help` pay for
numpy and every module of the stage; so a face maps each name to its module and imports
that module on first use (PEP 562 `__getattr__`).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_face(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(`__getattr__`, `__dir__`) for `package`, whose public `names` live in the given
    submodules (`{"check_parity": "run"}`: onnxtax.parity.run.check_parity)."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
