"""Imports run one way: error <- core <- the public facade <- kem <- keys <- cli; every module
of the package is in one of those layers; the engine never imports a concrete store."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "pqselfenc"

# The layers, lowest first, and the modules (paths under pqselfenc/) each one holds: a module
# may import its own layer and the ones below it, never one above.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("error", ("error.py",)),
    ("core", ("core/",)),
    # the package and its thin public modules over core: re-exports only (see test_facade_*)
    ("facade", ("__init__.py", "memory.py", "parallel.py", "streaming.py")),
    ("kem", ("kem/",)),
    ("keys", ("keys/",)),
    ("cli", ("cli/",)),
]
FACADE = next(spots for name, spots in LAYERS if name == "facade")


def layer_of(relative: str) -> int | None:
    """The index in ``LAYERS`` of the module at ``relative`` (a path under pqselfenc/)."""
    for index, (_, spots) in enumerate(LAYERS):
        if any(relative == s or (s.endswith("/") and relative.startswith(s)) for s in spots):
            return index
    return None


def path_of(module: str) -> str | None:
    """``pqselfenc.a.b`` -> ``a/b.py`` or ``a/b/__init__.py`` (relative to ROOT), if it exists."""
    parts = module.split(".")[1:]
    for candidate in ("/".join(parts) + ".py", "/".join([*parts, "__init__.py"])):
        if (ROOT / candidate).is_file():
            return candidate.removeprefix("/")
    return None


def imported_modules(path: Path) -> set[str]:
    """The pqselfenc modules ``path`` imports, anywhere in it (lazy imports too); ``from a
    import b`` counts as ``a.b`` when that is a module, else as ``a``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: a relative import would hide from this test"
            assert node.module is not None
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if path_of(sub) is not None else node.module)
    return {m for m in found if m == "pqselfenc" or m.startswith("pqselfenc.")}


def upward_imports(path: Path, relative: str) -> list[str]:
    """Each import in ``path`` (placed at ``relative``) of a module in a higher layer."""
    own = layer_of(relative)
    assert own is not None, f"{relative} is in no layer"
    wrong = []
    for module in sorted(imported_modules(path)):
        target = path_of(module)
        theirs = layer_of(target) if target is not None else None
        if theirs is None or theirs > own:
            where = LAYERS[theirs][0] if theirs is not None else "no layer"
            wrong.append(f"{relative} ({LAYERS[own][0]}) imports {module} ({where})")
    return wrong


def all_modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def test_every_module_is_in_a_layer() -> None:
    """A new top-level module or subpackage must be placed in LAYERS before it can land."""
    unplaced = [p.relative_to(ROOT).as_posix() for p in all_modules()]
    unplaced = [r for r in unplaced if layer_of(r) is None]
    assert unplaced == [], f"modules in no layer (add them to LAYERS): {unplaced}"
    assert layer_of("newthing.py") is None and layer_of("newpkg/__init__.py") is None


@pytest.mark.parametrize("path", all_modules(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_imports_run_one_way(path: Path) -> None:
    assert upward_imports(path, path.relative_to(ROOT).as_posix()) == []


def test_the_layer_check_sees_upward_and_lazy_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from pqselfenc import error\n"
        "from pqselfenc.core import _primitives as P\n"
        "def f():\n    from pqselfenc.cli._stores import open_store\n"
        "    import pqselfenc.keys\n"
    )
    assert upward_imports(probe, "core/probe.py") == [
        "core/probe.py (core) imports pqselfenc.cli._stores (cli)",
        "core/probe.py (core) imports pqselfenc.keys (keys)",
    ]
    assert upward_imports(probe, "cli/probe.py") == []
    assert len(upward_imports(probe, "streaming.py")) == 2  # the facade sits below kem/keys


@pytest.mark.parametrize("spot", FACADE)
def test_facade_modules_only_re_export(spot: str) -> None:
    """The public top-level modules hold no code: imports, ``__all__`` and a docstring (and
    the package's ``__version__``), so everything they offer is in a checked layer below."""
    tree = ast.parse((ROOT / spot).read_text())
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        targets = node.targets if isinstance(node, ast.Assign) else []
        names = {t.id for t in targets if isinstance(t, ast.Name)}
        assert names and names <= {"__all__", "__version__"}, f"{spot}:{node.lineno} holds code"


def test_engine_never_imports_a_concrete_store() -> None:
    for path in sorted((ROOT / "core").rglob("*.py")):
        if "stores" in path.parts:
            continue
        for name in imported_modules(path):
            assert not name.startswith("pqselfenc.core.stores"), f"{path.name} imports {name}"


def test_only_the_primitives_module_spells_labels() -> None:
    for path in ROOT.rglob("*.py"):
        if path.name == "_primitives.py":
            continue
        assert 'b"pqselfenc/' not in path.read_text(), f"{path.relative_to(ROOT)} spells a label"
