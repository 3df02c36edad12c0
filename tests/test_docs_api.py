"""The API reference builds from docstrings (scripts/build_api_docs.py), and every public name
has a docstring to build it from."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "build_api_docs.py"

_spec = importlib.util.spec_from_file_location("build_api_docs", SCRIPT)
assert _spec is not None and _spec.loader is not None
api = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(api)


def test_public_modules_are_the_non_underscore_ones() -> None:
    modules = api.public_modules()
    assert {"pqselfenc", "pqselfenc.error", "pqselfenc.kem", "pqselfenc.keys"} <= set(modules)
    assert not any(part.startswith("_") for m in modules for part in m.split("."))


def test_reference_builds_a_page_per_public_module(tmp_path: Path) -> None:
    pages = api.build(tmp_path / "api")
    written = {p.relative_to(tmp_path / "api").as_posix() for p in pages}
    for module in api.public_modules():
        assert module.replace(".", "/") + ".html" in written, module
    index = (tmp_path / "api" / "pqselfenc.html").read_text()
    assert "SelfEncryptor" in index and "DataMap" in index


def test_the_script_runs_as_a_program(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "-o", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "pqselfenc" / "kem.html").is_file()


def test_every_public_module_class_and_function_has_a_docstring() -> None:
    assert api.undocumented(api.public_modules(), members=False) == []


def test_every_public_method_and_property_has_a_docstring() -> None:
    missing = api.undocumented(api.public_modules())
    assert missing == [], "public names without a docstring:\n" + "\n".join(missing)


def test_the_checker_sees_a_missing_docstring(tmp_path: Path, monkeypatch: object) -> None:
    pkg = tmp_path / "probe_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        '"""Probe."""\n__all__ = ["Thing", "f"]\n'
        'class Thing:\n    """A thing."""\n    def method(self) -> None:\n        pass\n'
        "    @property\n    def size(self) -> int:\n        return 1\n"
        "def f() -> None:\n    pass\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        found = api.undocumented(["probe_pkg"])
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("probe_pkg", None)
    assert found == ["probe_pkg.Thing.method", "probe_pkg.Thing.size", "probe_pkg.f"]
