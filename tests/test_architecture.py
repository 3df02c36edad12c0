"""Imports run one way: core <- kem <- keys <- cli; the engine never imports a concrete store."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "pqselfenc"

# layer -> packages it must never import
FORBIDDEN = {
    "core": ("pqselfenc.kem", "pqselfenc.keys", "pqselfenc.cli"),
    "kem": ("pqselfenc.keys", "pqselfenc.cli"),
    "keys": ("pqselfenc.cli",),
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def modules(layer: str) -> list[Path]:
    return sorted((ROOT / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_one_way(layer: str) -> None:
    for path in modules(layer):
        for name in imports_of(path):
            assert not name.startswith(FORBIDDEN[layer]), f"{path.relative_to(ROOT)} imports {name}"


def test_engine_never_imports_a_concrete_store() -> None:
    for path in modules("core"):
        if "stores" in path.parts:
            continue
        for name in imports_of(path):
            assert not name.startswith("pqselfenc.core.stores"), f"{path.name} imports {name}"


def test_only_the_primitives_module_spells_labels() -> None:
    for path in ROOT.rglob("*.py"):
        if path.name == "_primitives.py":
            continue
        assert 'b"pqselfenc/' not in path.read_text(), f"{path.relative_to(ROOT)} spells a label"
