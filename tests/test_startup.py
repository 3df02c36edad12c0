"""Start-up stays cheap (issue 17): a short command loads only what it uses.

Each check runs a fresh interpreter with ``-X importtime`` and reads the modules it imported.
``import pqselfenc`` and ``pqselfenc --version`` load none of the engine; ``decrypt`` of an
unsealed map from a directory store loads the engine but nothing of the key layer, asyncio, the
S3 store, the progress bar, ``socket``, nor ``zstandard`` unless a chunk it reads is stored
compressed. ``benchmarks/bench_startup.py`` measures what that is worth.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _cli_helpers import clean_env

import pqselfenc
import pqselfenc.cli as cli

ROOT = Path(__file__).resolve().parent.parent

# Never needed by a short command that does not use them (a module or a package prefix).
HEAVY = (
    "argon2", "asyncio", "boto3", "botocore", "dask", "distributed", "filelock", "keyring",
    "pkcs11", "tqdm", "zxcvbn", "pqselfenc.kem", "pqselfenc.keys", "pqselfenc.distributed",
    "pqselfenc.core.stores.s3",
)  # fmt: skip
# ... nor, for decrypt, what only a compressed chunk or a lock's owner record needs.
DECRYPT_HEAVY = (*HEAVY, "zstandard", "socket")
# ... and not even the engine for ``import pqselfenc`` and ``--version``.
ENGINE = (
    "cryptography", "zstandard", "concurrent.futures", "hashlib", "pqselfenc.core",
    "pqselfenc.cli._output", "pqselfenc.error",
)  # fmt: skip


def imported(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> set[str]:
    """The modules ``python -X importtime ARGS`` imports (the run must succeed)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split("|") for line in done.stderr.splitlines() if line.startswith("import time:")]
    return {cells[2].strip() for cells in rows[1:] if len(cells) == 3}


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """The modules among ``modules`` that are one of ``names`` or inside one of them."""
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_import_pqselfenc_loads_nothing_heavy() -> None:
    modules = imported("-c", "import pqselfenc")
    assert loaded(modules, HEAVY + ENGINE) == []
    assert {m for m in modules if m.startswith("pqselfenc")} == {"pqselfenc"}


def test_version_loads_nothing_heavy() -> None:
    modules = imported("-m", "pqselfenc.cli", "--version")
    assert loaded(modules, HEAVY + ENGINE + ("pqselfenc.cli._",)) == []


def test_the_check_sees_a_heavy_import() -> None:
    modules = imported("-c", "import pqselfenc, zstandard, pqselfenc.core.stores.s3")
    assert "zstandard" in loaded(modules, ENGINE)
    assert loaded(modules, HEAVY) == ["pqselfenc.core.stores.s3"]


def encrypted(tmp_path: Path, data: bytes, *options: str) -> tuple[Path, dict[str, str]]:
    """An unsealed map of ``data`` in a directory store, and the environment to run in."""
    env = clean_env(tmp_path / "home", PQSELFENC_STORE=str(tmp_path / "store"))
    (tmp_path / "small").write_bytes(data)
    argv = ["-m", "pqselfenc.cli", "encrypt", "small", "--out", "small.map", "-q", *options]
    modules = imported(*argv, env=env, cwd=tmp_path)
    assert loaded(modules, HEAVY) == [], "encrypt without --to"
    assert ("zstandard" in modules) == bool(options), "encrypt loads zstd only to compress"
    return tmp_path / "small.map", env


def decrypt_imports(path: Path, env: dict[str, str]) -> set[str]:
    """The modules ``pqselfenc decrypt`` of the map at ``path`` loads (the output must match)."""
    out = path.with_name("out")
    argv = ["-m", "pqselfenc.cli", "decrypt", str(path), "--out", str(out), "-q"]
    modules = imported(*argv, env=env, cwd=path.parent)
    assert out.read_bytes() == (path.parent / "small").read_bytes()
    return modules


@pytest.mark.parametrize("options", [(), ("--compress", "zstd")])
def test_decrypt_of_a_small_unsealed_map_loads_only_what_decrypt_needs(
    tmp_path: Path, options: tuple[str, ...]
) -> None:
    """1 KiB of random bytes: stored raw even by a compressing pipeline (zstd would not make it
    smaller), so no chunk needs zstandard and decrypt does not load it."""
    modules = decrypt_imports(*encrypted(tmp_path, os.urandom(1024), *options))
    assert loaded(modules, DECRYPT_HEAVY) == []
    other_commands = ("pqselfenc.cli._keys", "pqselfenc.cli._store", "pqselfenc.cli._audit")
    assert loaded(modules, other_commands) == []
    assert "pqselfenc.core.stores.directory" in modules  # the check sees what it did load
    assert "cryptography.hazmat.primitives.ciphers.aead" in modules


def test_decrypt_loads_zstandard_when_a_chunk_is_stored_compressed(tmp_path: Path) -> None:
    """The control: a compressible file under ``--compress zstd`` is stored compressed, and
    decrypt loads zstandard to read it (the lazy import is not a missing one)."""
    path, env = encrypted(tmp_path, b"pqselfenc " * 4000, "--compress", "zstd")
    assert "zstandard" in decrypt_imports(path, env)


def type_checking_imports() -> dict[str, str]:
    """Name -> module of the imports under ``if TYPE_CHECKING:`` in pqselfenc/__init__.py."""
    tree = ast.parse((ROOT / "pqselfenc" / "__init__.py").read_text())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.module
                found |= {alias.name: imp.module for alias in imp.names}
    return found


def test_every_lazy_name_is_the_object_type_checkers_see() -> None:
    names = [n for n in pqselfenc.__all__ if n != "__version__"]
    assert sorted(type_checking_imports()) == names
    for name, module in type_checking_imports().items():
        assert getattr(pqselfenc, name) is getattr(importlib.import_module(module), name), name
    assert set(pqselfenc.__all__) <= set(dir(pqselfenc))


def test_lazy_names_in_a_fresh_interpreter() -> None:
    script = (
        "import pqselfenc, sys\n"
        "assert 'pqselfenc.core' not in sys.modules\n"
        "from pqselfenc import DataMap, SelfEncryptor\n"
        "assert SelfEncryptor.__module__ == 'pqselfenc.core.encryptor'\n"
        "assert pqselfenc.DataMap is DataMap and 'DataMap' in vars(pqselfenc)\n"
        "from pqselfenc import error, kem\n"
        "try:\n"
        "    pqselfenc.NoSuchName\n"
        "except AttributeError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "module 'pqselfenc' has no attribute 'NoSuchName'"


def commands(parser: object) -> set[str]:
    """The command names a parser from ``cli.build_parser`` knows."""
    sub = next(a for a in parser._actions if a.dest == "command")  # type: ignore[attr-defined]
    return set(sub.choices)


def test_each_command_builds_only_its_own_parsers_and_all_are_listed() -> None:
    everything = commands(cli.build_parser())
    assert set(cli._OWNERS) == everything
    for command, owner in cli._OWNERS.items():
        assert commands(cli.build_parser(command)) == {
            c for c, o in cli._OWNERS.items() if o == owner
        }
    assert commands(cli.build_parser("no-such-command")) == everything
