#!/usr/bin/env python3
"""Build the API reference from docstrings with pdoc, and list public names without one.

    python3 scripts/build_api_docs.py                 # HTML into docs/api/ (gitignored)
    python3 scripts/build_api_docs.py -o /tmp/api     # elsewhere
    python3 scripts/build_api_docs.py --check   # also exit 1 if a public name has no docstring

Public modules are every module of the ``pqselfenc`` package whose dotted path has no
component starting with ``_`` (``pqselfenc.cli`` included: its ``main`` is the entry point).
Public names are a module's ``__all__`` (or, without one, its names not starting with ``_``),
and inside each public class its own public methods and properties. Dataclass fields are
documented by the class docstring and are not checked one by one.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import pkgutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pdoc
import pdoc.doc

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "docs" / "api"
PACKAGE = "pqselfenc"
# Document the tree this script sits in, even when another checkout is installed.
sys.path.insert(0, str(ROOT))


def public_modules(package: str = PACKAGE) -> list[str]:
    """Dotted names of the public modules of ``package``, sorted."""
    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def _module_doc(name: str) -> pdoc.doc.Module:
    """pdoc's view of module ``name``. Names a module loads on first use (PEP 562
    ``__getattr__``, as ``pqselfenc`` does) are resolved first: pdoc reads ``__dict__``."""
    module = importlib.import_module(name)
    for member in getattr(module, "__all__", ()):
        getattr(module, member)
    return pdoc.doc.Module.from_name(name)


def _exported(module: pdoc.doc.Module) -> list[pdoc.doc.Doc]:  # type: ignore[type-arg]
    obj = module.obj
    names = getattr(obj, "__all__", None)
    members = module.members
    if names is None:
        names = [n for n, m in members.items() if not n.startswith("_") and not m.is_inherited]
    return [members[n] for n in names if n in members]


def _is_property(cls: type, name: str) -> bool:
    attr = inspect.getattr_static(cls, name, None)
    return isinstance(attr, property | functools.cached_property)


def _class_members(doc: pdoc.doc.Class) -> Iterator[pdoc.doc.Doc]:  # type: ignore[type-arg]
    cls = doc.obj
    for member in doc.own_members:
        name = member.name
        if name.startswith("_") or name not in vars(cls):
            continue
        if isinstance(member, pdoc.doc.Function) or _is_property(cls, name):
            yield member


def _where(member: pdoc.doc.Doc, owner: type | None = None) -> str:  # type: ignore[type-arg]
    """Where a name is defined (re-exports of one object are reported once)."""
    if owner is not None:
        return f"{owner.__module__}.{owner.__qualname__}.{member.name}"
    obj = member.obj
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else member.fullname


def undocumented(modules: list[str], *, members: bool = True) -> list[str]:
    """Public modules, classes, functions and (with ``members``) methods and properties without
    a docstring, by where they are defined. An inherited docstring counts: an override of a
    documented method is documented."""
    missing: set[str] = set()
    for name in modules:
        module = _module_doc(name)
        if not module.docstring.strip():
            missing.add(name)
        for member in _exported(module):
            if isinstance(member, pdoc.doc.Variable):
                continue  # constants and __version__: described by the module docstring
            if not member.docstring.strip():
                missing.add(_where(member))
            if members and isinstance(member, pdoc.doc.Class):
                missing |= {
                    _where(m, member.obj) for m in _class_members(member) if not m.docstring.strip()
                }
    return sorted(missing)


def build(output: Path, modules: list[str] | None = None) -> list[Path]:
    """Render HTML for ``modules`` (default: every public module) into ``output``; the pages.

    Same steps as ``pdoc.pdoc``, with the module list given exactly: pdoc's own walk stops at a
    package whose ``__all__`` does not name its submodules, and warns on repeated specs.
    """
    pdoc.render.configure(docformat="restructuredtext", show_source=False)
    names = public_modules() if modules is None else modules
    docs = {name: _module_doc(name) for name in names}
    pages = []
    for name, module in docs.items():
        page = output / f"{name.replace('.', '/')}.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(pdoc.render.html_module(module, docs), encoding="utf-8")
        pages.append(page)
    (output / "index.html").write_text(pdoc.render.html_index(docs), encoding="utf-8")
    (output / "search.js").write_text(pdoc.render.search_index(docs), encoding="utf-8")
    return sorted(pages)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--check", action="store_true", help="fail on undocumented names")
    args = parser.parse_args(argv)
    modules = public_modules()
    files = build(args.output, modules)
    print(f"{len(files)} pages for {len(modules)} modules in {args.output}")
    missing = undocumented(modules)
    for name in missing:
        print(f"undocumented: {name}", file=sys.stderr)
    return 1 if args.check and missing else 0


if __name__ == "__main__":
    sys.exit(main())
