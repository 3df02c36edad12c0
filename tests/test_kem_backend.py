"""ML-KEM backends: the default one, the liboqs probe (which must never import ``oqs``), and
cross-checks against independent implementations: liboqs wherever its shared library is
installed, and always kyber-py (pure Python FIPS 203, a dev dependency), through the same
``KemBackend`` protocol."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pqselfenc.error import EncryptionError, InvalidDataError, WeakSecretError
from pqselfenc.kem import (
    CryptographyBackend,
    KemBackend,
    LiboqsProbe,
    OqsBackend,
    PrivateKey,
    get_backend,
    probe_liboqs,
)
from tests.test_kem_kat import MLKEM, VECTORS, rsp_records

ROOT = Path(__file__).resolve().parent.parent

# A stand-in ``oqs`` package that behaves like liboqs-python without its C library: importing
# it records the import and raises SystemExit (the real one clones from the network first).
FAKE_OQS = """
import os, pathlib
pathlib.Path(os.environ["OQS_IMPORT_MARKER"]).write_text("imported")
raise SystemExit("Could not load liboqs shared library")
"""


def run_isolated(tmp_path: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with the fake ``oqs`` first on sys.path."""
    pkg = tmp_path / "fake" / "oqs"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(FAKE_OQS)
    environ = {k: v for k, v in os.environ.items() if k != "OQS_INSTALL_PATH"}
    environ.update(
        PYTHONPATH=os.pathsep.join([str(tmp_path / "fake"), str(ROOT)]),
        OQS_IMPORT_MARKER=str(tmp_path / "marker"),
        **env,
    )
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# -- the probe -------------------------------------------------------------------------------


def test_probe_reports_liboqs_absent_on_this_machine() -> None:
    probe = probe_liboqs()
    assert probe.library is None and not probe.available
    assert "not installed" in probe.reason


def test_probe_and_backend_never_import_oqs_when_the_library_is_missing(tmp_path: Path) -> None:
    result = run_isolated(
        tmp_path,
        """
        import sys
        from pqselfenc.error import EncryptionError
        from pqselfenc.kem import get_backend, probe_liboqs
        probe = probe_liboqs()
        assert probe.module, "the fake oqs package must be found (find_spec, not import)"
        assert not probe.available and probe.library is None, probe
        try:
            get_backend("liboqs")
        except EncryptionError as exc:
            print("refused:", exc)
        assert "oqs" not in sys.modules
        """,
    )
    assert result.returncode == 0, result.stderr
    assert "refused: the liboqs backend is unavailable" in result.stdout
    assert not (tmp_path / "marker").exists(), "oqs was imported"


def test_probe_finds_a_library_under_oqs_install_path(tmp_path: Path) -> None:
    lib = tmp_path / "oqs-install" / "lib"
    lib.mkdir(parents=True)
    (lib / "liboqs.so.0.14.0").write_bytes(b"")
    probe = probe_liboqs(environ={"OQS_INSTALL_PATH": str(tmp_path / "oqs-install")})
    assert probe.library == str(lib / "liboqs.so.0.14.0")
    assert probe_liboqs(environ={"OQS_INSTALL_PATH": str(tmp_path / "empty")}).library is None


def test_probe_looks_in_the_default_install_folder(tmp_path: Path) -> None:
    # liboqs-python's own default when $OQS_INSTALL_PATH is unset: ~/_oqs/lib
    lib = tmp_path / "_oqs" / "lib64"
    lib.mkdir(parents=True)
    (lib / "liboqs.so").write_bytes(b"")
    assert probe_liboqs(environ={"HOME": str(tmp_path)}).library == str(lib / "liboqs.so")


def test_probe_uses_find_library() -> None:
    asked: list[str] = []

    def find(name: str) -> str | None:
        asked.append(name)
        return "liboqs.so.9"

    assert probe_liboqs(environ={}, find_library=find).library == "liboqs.so.9"
    assert asked == ["oqs"]


def test_a_failing_oqs_import_becomes_an_encryption_error(tmp_path: Path) -> None:
    # The library "is there" (per the probe) but loading fails: SystemExit must not escape.
    result = run_isolated(
        tmp_path,
        """
        from pqselfenc.error import EncryptionError
        from pqselfenc.kem import LiboqsProbe, OqsBackend
        try:
            OqsBackend(LiboqsProbe(library="liboqs.so", module=True))
        except EncryptionError as exc:
            print("translated:", exc, type(exc.__cause__).__name__)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert "translated: liboqs-python failed to load liboqs SystemExit" in result.stdout


def test_unavailable_probe_refuses_the_backend() -> None:
    with pytest.raises(EncryptionError, match="liboqs-python is not installed"):
        OqsBackend(LiboqsProbe(library="liboqs.so", module=False))


def test_probe_reasons() -> None:
    assert LiboqsProbe("liboqs.so", True).reason == "liboqs found (liboqs.so)"
    assert "shared library" in LiboqsProbe(None, True).reason


# -- the default backend ---------------------------------------------------------------------


def test_get_backend() -> None:
    assert isinstance(get_backend(), CryptographyBackend)
    assert isinstance(get_backend(), KemBackend)
    with pytest.raises(ValueError, match="unknown KEM backend"):
        get_backend("openssl")


@pytest.mark.parametrize("algorithm", ["ML-KEM-768", "ML-KEM-1024"])
def test_cryptography_backend_round_trip(algorithm: str) -> None:
    backend = CryptographyBackend()
    seed = bytes(range(64))
    ciphertext, secret = backend.encapsulate(algorithm, backend.public_key(algorithm, seed))
    assert backend.decapsulate(algorithm, seed, ciphertext) == secret and len(secret) == 32


def test_cryptography_backend_misuse_and_bad_input() -> None:
    backend = CryptographyBackend()
    with pytest.raises(ValueError, match="parameter set"):
        backend.public_key("ML-KEM-512", bytes(64))
    with pytest.raises(ValueError, match="64 bytes"):
        backend.public_key("ML-KEM-768", bytes(32))
    with pytest.raises(InvalidDataError):
        backend.encapsulate("ML-KEM-768", b"\xff" * 1184)
    with pytest.raises(InvalidDataError):
        backend.decapsulate("ML-KEM-768", bytes(64), bytes(1087))


# -- cross-checks against independent implementations ---------------------------------------

LIBOQS = probe_liboqs()
needs_liboqs = pytest.mark.skipif(not LIBOQS.available, reason=LIBOQS.reason)


class KyberPyBackend:
    """kyber-py (pure-Python FIPS 203, written from the standard, sharing no code with OpenSSL
    or liboqs) behind the ``KemBackend`` protocol. Not constant time: tests only."""

    name = "kyber-py"

    def __init__(self) -> None:
        from kyber_py.ml_kem import ML_KEM_768, ML_KEM_1024

        self._kem = {"ML-KEM-768": ML_KEM_768, "ML-KEM-1024": ML_KEM_1024}

    def public_key(self, algorithm: str, seed: bytes) -> bytes:
        ek, _ = self._kem[algorithm].key_derive(seed)
        return bytes(ek)

    def encapsulate(self, algorithm: str, public_key: bytes) -> tuple[bytes, bytes]:
        shared, ciphertext = self._kem[algorithm].encaps(public_key)
        return bytes(ciphertext), bytes(shared)

    def decapsulate(self, algorithm: str, seed: bytes, ciphertext: bytes) -> bytes:
        _, dk = self._kem[algorithm].key_derive(seed)
        return bytes(self._kem[algorithm].decaps(dk, ciphertext))


def _agrees_with_cryptography(other: KemBackend, suite: str, algorithm: str, filename: str) -> None:
    """KAT answers from ``other``, and keys and ciphertexts crossing between the two."""
    ref = CryptographyBackend()
    for i, v in enumerate(rsp_records(VECTORS / "asymmetric" / "MLKEM" / filename)):
        if i == 10:
            break
        seed = bytes.fromhex(v["d"] + v["z"])
        assert other.public_key(algorithm, seed).hex() == v["pk"]
        assert other.decapsulate(algorithm, seed, bytes.fromhex(v["ct"])).hex() == v["ss"]
        assert other.decapsulate(algorithm, seed, bytes.fromhex(v["ct_n"])).hex() == v["ss_n"]
        ct, ss = other.encapsulate(algorithm, ref.public_key(algorithm, seed))
        assert ref.decapsulate(algorithm, seed, ct) == ss
        ct, ss = ref.encapsulate(algorithm, other.public_key(algorithm, seed))
        assert other.decapsulate(algorithm, seed, ct) == ss
        PrivateKey.from_seed(suite, seed).self_test(other)


@needs_liboqs
@pytest.mark.parametrize(("suite", "algorithm", "filename"), MLKEM)
def test_liboqs_agrees_with_cryptography(suite: str, algorithm: str, filename: str) -> None:
    _agrees_with_cryptography(OqsBackend(), suite, algorithm, filename)


@pytest.mark.parametrize(("suite", "algorithm", "filename"), MLKEM)
def test_kyber_py_agrees_with_cryptography(suite: str, algorithm: str, filename: str) -> None:
    backend = KyberPyBackend()
    assert isinstance(backend, KemBackend)
    _agrees_with_cryptography(backend, suite, algorithm, filename)


def test_a_backend_that_disagrees_fails_the_key_self_test() -> None:
    """The self-test is a real check: a backend whose shared secrets differ is caught."""

    class Wrong(KyberPyBackend):
        def decapsulate(self, algorithm: str, seed: bytes, ciphertext: bytes) -> bytes:
            return bytes(32)

    seed = bytes(range(64))
    PrivateKey.from_seed("ml-kem-768", seed).self_test(KyberPyBackend())
    with pytest.raises(WeakSecretError, match="pairwise consistency"):
        PrivateKey.from_seed("ml-kem-768", seed).self_test(Wrong())
