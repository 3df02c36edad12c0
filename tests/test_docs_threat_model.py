"""Every test the threat model, the user guide and the PKCS#11 guide name exists (file and
function or method)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [*sorted((ROOT / "threat-model").glob("*.md")), ROOT / "docs" / "guide.md",
        ROOT / "docs" / "pkcs11.md"]
REFERENCE = re.compile(r"(tests/[\w/]+\.py)::(\w+(?:::\w+)?)")
BARE = re.compile(r"`(test_\w+)`")


def defined_tests(path: Path) -> set[str]:
    """``name`` for module-level functions, ``Class::method`` for methods."""
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names |= {
                f"{node.name}::{item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            }
    return names


def references(doc: Path) -> list[tuple[str, str]]:
    return REFERENCE.findall(doc.read_text())


def test_the_threat_model_names_tests() -> None:
    readme = ROOT / "threat-model" / "README.md"
    assert len(references(readme)) >= 60


@pytest.mark.parametrize("doc", [d for d in DOCS if d.exists()], ids=lambda d: d.name)
def test_every_named_test_exists(doc: Path) -> None:
    missing = []
    for file, name in references(doc):
        path = ROOT / file
        if not path.is_file() or name not in defined_tests(path):
            missing.append(f"{file}::{name}")
    assert not missing, f"{doc.name} names tests that do not exist: {missing}"


def test_bare_test_names_in_the_readme_exist_somewhere() -> None:
    """A test named without its file (in prose) must still be a real test."""
    every = set().union(*(defined_tests(p) for p in (ROOT / "tests").rglob("test_*.py")))
    text = (ROOT / "threat-model" / "README.md").read_text()
    unknown = [n for n in BARE.findall(text) if n not in every]
    assert not unknown, unknown


def test_the_readme_links_the_layer_documents() -> None:
    text = (ROOT / "threat-model" / "README.md").read_text()
    for target in ("kem.md", "keys.md", "../docs/guide.md", "../docs/format.md"):
        assert f"]({target}" in text, target
        assert (ROOT / "threat-model" / target.split("#")[0]).exists(), target
