"""The house's rules, held against the code: each package imports only packages below it (a lazy
import too: it still ties the two), no module grows past 600 lines, and no module reaches into
another's private names. docs/architecture.md draws the same floors."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "onnxtax"

# floor of each room: a room may import only rooms on lower floors (and itself)
FLOORS = {
    "core": 0,
    "export": 1, "lint": 1, "bench": 1, "verify": 1,
    "quantize": 2,  # times its builds with bench's harness
    "parity": 3,  # an INT8 artifact is re-checked against its quantization budgets
    "runtimes": 4,  # compares with parity's shapes, samples and rule
    "serve": 4,  # checks its hosts with parity's shapes, samples and rule
    "render": 5,
    "ci": 6,
    "cli": 7,
    "": 8,  # the package's own face and __main__
}
MAX_LINES = 600


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def room_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else ""


def imported(path: Path) -> list[tuple[str, int]]:
    """(imported onnxtax module, line) for every import in the file, wherever it stands."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("onnxtax") and not node.level:
            out.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("onnxtax")]
    return out


def test_every_room_has_a_floor():
    rooms = {room_of(p) for p in modules()}
    assert rooms <= set(FLOORS), f"rooms without a floor: {rooms - set(FLOORS)}"


def test_no_room_imports_a_room_above_it():
    upward = []
    for path in modules():
        room = room_of(path)
        for module, line in imported(path):
            parts = module.split(".")
            target = parts[1] if len(parts) > 1 and parts[1] in FLOORS else ""
            if target != room and FLOORS[target] >= FLOORS[room]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({room or 'onnxtax'}) imports {module}")
    assert not upward, "imports that run up a floor:\n" + "\n".join(upward)


def test_no_module_passes_600_lines():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split these by step: {long}"


def test_no_private_name_is_imported_from_another_module():
    found = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("onnxtax"):
                found += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, "private names used across modules:\n" + "\n".join(found)


def test_the_checks_can_fail(tmp_path, monkeypatch):
    """The rules above do see an upward import and a long module when there is one."""
    fake = tmp_path / "onnxtax"
    (fake / "core").mkdir(parents=True)
    (fake / "core" / "x.py").write_text("from onnxtax.cli import app\n" + "pass\n" * (MAX_LINES + 1))
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    for check in (test_no_room_imports_a_room_above_it, test_no_module_passes_600_lines):
        try:
            check()
        except AssertionError:
            continue
        raise AssertionError(f"{check.__name__} passed on a house that breaks it")
