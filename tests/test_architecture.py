"""Imports run one way: error <- core <- the public facade <- kem <- keys <- cli; every module
of the package is in one of those layers; the engine never imports a concrete store."""

from __future__ import annotations

import ast
import sys
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
    # the optional Dask extra: the engine on a cluster (core only; the CLI calls it)
    ("distributed", ("distributed/",)),
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


def is_lazy_re_export(node: ast.stmt) -> bool:
    """The parts of a re-export that loads on first use (PEP 562): imports under ``if
    TYPE_CHECKING:`` (for type checkers), a ``_WHERE`` table of name -> core module, and the
    module's ``__getattr__`` and ``__dir__``."""
    if isinstance(node, ast.If):
        body_imports = all(isinstance(n, ast.Import | ast.ImportFrom) for n in node.body)
        return ast.unparse(node.test) == "TYPE_CHECKING" and body_imports and not node.orelse
    if isinstance(node, ast.FunctionDef):
        return node.name in {"__getattr__", "__dir__"}
    if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["_WHERE"]:
        values = node.value.values if isinstance(node.value, ast.Dict) else [node.value]
        return all(
            isinstance(v, ast.Constant) and str(v.value).startswith("pqselfenc.core.")
            for v in values
        )
    return False


@pytest.mark.parametrize("spot", FACADE)
def test_facade_modules_only_re_export(spot: str) -> None:
    """The public top-level modules hold no code: imports, ``__all__`` and a docstring (and
    the package's ``__version__``), or a lazy re-export of core names, so everything they offer
    is in a checked layer below."""
    tree = ast.parse((ROOT / spot).read_text())
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom) or is_lazy_re_export(node):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        targets = node.targets if isinstance(node, ast.Assign) else []
        names = {t.id for t in targets if isinstance(t, ast.Name)}
        assert names and names <= {"__all__", "__version__"}, f"{spot}:{node.lineno} holds code"


def test_the_facade_check_sees_code_beside_a_lazy_re_export() -> None:
    lazy = (
        "if TYPE_CHECKING:\n    from pqselfenc.core.datamap import DataMap\n"
        "_WHERE = {'DataMap': 'pqselfenc.core.datamap'}\n"
        "def __getattr__(name): ...\n"
        "def __dir__(): ...\n"
    )
    assert all(is_lazy_re_export(node) for node in ast.parse(lazy).body)
    code = (
        "if TYPE_CHECKING:\n    x = 1\n"
        "if TYPE_CHECKING:\n    import a\nelse:\n    import b\n"
        "_WHERE = {'KeyStore': 'pqselfenc.keys'}\n"
        "_WHERE = make_table()\n"
        "def helper(): ...\n"
    )
    assert not any(is_lazy_re_export(node) for node in ast.parse(code).body)


# The one way into the stores from the rest of core: the embedded default (HOME/chunks), which
# the streaming front end uses when no store is named. The engine never sees which store it is.
DEFAULT_STORE = "pqselfenc.core.stores.default"
DEFAULT_STORE_USERS = {"_streaming.py"}


def test_engine_never_imports_a_concrete_store() -> None:
    for path in sorted((ROOT / "core").rglob("*.py")):
        if "stores" in path.parts:
            continue
        for name in imported_modules(path):
            if name == DEFAULT_STORE and path.name in DEFAULT_STORE_USERS:
                continue
            assert not name.startswith("pqselfenc.core.stores"), f"{path.name} imports {name}"


def test_only_the_primitives_module_spells_labels() -> None:
    for path in ROOT.rglob("*.py"):
        if path.name == "_primitives.py":
            continue
        assert 'b"pqselfenc/' not in path.read_text(), f"{path.relative_to(ROOT)} spells a label"


# -- one owner per concern: no import cycle, no private member used from another module ---------


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    """``pqselfenc.a.b`` names a module or package file (not a name defined in one)."""
    return path_of(name) is not None


def ours(node: ast.ImportFrom) -> bool:
    """An absolute ``from pqselfenc... import``."""
    return node.level == 0 and (node.module or "").startswith("pqselfenc")


def modules(layer: str) -> list[Path]:
    """Every module file of one layer's package (``keys``, ``kem``, ``cli``)."""
    return sorted((ROOT / layer).rglob("*.py"))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (a list of nodes, first repeated last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("layer", ["keys", "kem", "cli"])
def test_no_import_cycle_inside_a_layer(layer: str) -> None:
    """Counting imports in functions and under TYPE_CHECKING: none may hide a cycle."""
    graph = {module_name(p): imported_modules(p) for p in modules(layer)}
    inside = {name: {m for m in deps if m in graph and m != name} for name, deps in graph.items()}
    assert find_cycle(inside) is None


# Where private members must stay in the module that defines them: all of keys/, and the CLI's
# use of the key store (a ``_name`` the CLI reaches that keys/ defines).
PRIVATE_SCOPE = ("keys", "cli")


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_members(tree: ast.AST) -> set[str]:
    """``_names`` a module defines as members: methods, class-level assignments, and
    ``self._x =`` / ``cls._x =`` targets."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    names.add(item.name)
                elif isinstance(item, ast.AnnAssign | ast.Assign):
                    targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                    names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and on_self(node):
            names.add(node.attr)
    return {n for n in names if private(n)}


def on_self(node: ast.Attribute) -> bool:
    return isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")


def private_keys_module(name: str) -> bool:
    return name.startswith("pqselfenc.keys.") and any(private(p) for p in name.split("."))


def imported_private(node: ast.Import | ast.ImportFrom, layer: str) -> list[str]:
    """Private names imported from another module (a private submodule of a package is fine);
    from the CLI, also any private module of keys/."""
    if isinstance(node, ast.Import):
        hits = [a.name for a in node.names if layer == "cli" and private_keys_module(a.name)]
        return [f"import {name}" for name in hits]
    found = []
    for alias in node.names:
        full = f"{node.module}.{alias.name}"
        module = full if is_module(full) else str(node.module)
        if (private(alias.name) and not is_module(full)) or (
            layer == "cli" and private_keys_module(module)
        ):
            found.append(f"from {node.module} import {alias.name}")
    return found


def private_access(path: Path, foreign: set[str]) -> list[str]:
    """``x._name`` where ``x`` is not ``self``/``cls`` and this module does not define ``_name``
    (in cli/, only the names of ``foreign``: those keys/ defines), and ``imported_private``."""
    tree = ast.parse(path.read_text(), str(path))
    own, layer = private_members(tree), path.relative_to(ROOT).parts[0]
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Attribute) and private(node.attr) and node.attr not in own:
            if not on_self(node) and (layer == "keys" or node.attr in foreign):
                found.append(f"{where} {ast.unparse(node)}")
        elif isinstance(node, ast.Import) or (isinstance(node, ast.ImportFrom) and ours(node)):
            found += [f"{where} {hit}" for hit in imported_private(node, layer)]
    return found


def test_no_private_member_is_used_from_another_module() -> None:
    trees = [ast.parse(p.read_text(), str(p)) for p in modules("keys")]
    keys_members = set().union(*(private_members(t) for t in trees))
    found = [
        hit
        for layer in PRIVATE_SCOPE
        for path in modules(layer)
        for hit in private_access(path, keys_members)
    ]
    assert found == [], "private members used across modules:\n" + "\n".join(found)


def test_the_private_access_check_sees_each_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_root = tmp_path / "pqselfenc"
    for layer in ("keys", "cli"):
        (fake_root / layer).mkdir(parents=True)
        (fake_root / layer / "__init__.py").write_text("")
    (fake_root / "keys" / "_part.py").write_text("")
    keys_mod = fake_root / "keys" / "probe.py"
    keys_mod.write_text(
        "from pqselfenc import __version__\n"  # a dunder: fine
        "from pqselfenc.keys import _part\n"  # a private module of the package: fine
        "from pqselfenc.keys.other import _helper\n"  # a private name: not fine
        "class A:\n"
        "    def __init__(self, b):\n"
        "        self._mine = b\n"
        "        self._mine._theirs()\n"  # another object's private member
        "    def _same(self, other):\n"
        "        return other._mine\n"  # this module's own member: fine
    )
    cli_mod = fake_root / "cli" / "probe.py"
    cli_mod.write_text(
        "import pqselfenc.keys._part\n"  # a private keys module from the CLI
        "from pqselfenc.keys._part import thing\n"  # likewise
        "def f(store, parser):\n"
        "    parser._actions\n"  # not a keys member: not this check's business
        "    return store._mine\n"  # a keys member
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake_root)
    assert [h.split(" ", 1)[1] for h in private_access(keys_mod, set())] == [
        "from pqselfenc.keys.other import _helper",
        "self._mine._theirs",
    ]
    assert sorted(h.split(" ", 1)[1] for h in private_access(cli_mod, {"_mine"})) == [
        "from pqselfenc.keys._part import thing",
        "import pqselfenc.keys._part",
        "store._mine",
    ]
