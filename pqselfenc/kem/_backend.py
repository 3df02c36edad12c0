"""ML-KEM backends: the default `cryptography` one and an optional liboqs-python one.

A backend provides the raw FIPS 203 operations on seeds and bytes (public key from a 64-byte
``d || z`` seed, encapsulate, decapsulate). The envelope's HPKE always runs on `cryptography`:
liboqs has no HPKE, and composing one from its KEM would mean hand-rolling the RFC 9180 key
schedule, which CRYPTO.md forbids. A second backend is therefore a cross-check: key
self-tests (``PrivateKey.self_test(backend)``) and the KAT/interop tests use it.

liboqs-python's ``import oqs`` clones and builds liboqs from the network, then raises
``SystemExit``, when the C library is missing. ``probe_liboqs`` therefore looks for the shared
library (``$OQS_INSTALL_PATH`` or liboqs-python's default ``~/_oqs``, then
``ctypes.util.find_library("oqs")``) and for the module
(``importlib.util.find_spec``, which does not run it) and never imports ``oqs``; only
``OqsBackend()`` imports it, and only after the probe found both.
"""

from __future__ import annotations

import ctypes.util
import importlib
import importlib.util
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from cryptography.hazmat.primitives.asymmetric import mlkem

from pqselfenc.core import _primitives as P
from pqselfenc.error import EncryptionError, InvalidDataError

__all__ = [
    "CryptographyBackend",
    "KemBackend",
    "LiboqsProbe",
    "OqsBackend",
    "get_backend",
    "probe_liboqs",
]

ALGORITHMS = ("ML-KEM-768", "ML-KEM-1024")
_LIB_DIRS = ("lib", "lib64", "bin")
_LIB_PATTERNS = ("liboqs.so*", "liboqs*.dylib", "oqs.dll", "liboqs.dll")


@runtime_checkable
class KemBackend(Protocol):
    """Raw ML-KEM on bytes. ``algorithm`` is ``"ML-KEM-768"`` or ``"ML-KEM-1024"``."""

    name: str

    def public_key(self, algorithm: str, seed: bytes) -> bytes:
        """The encapsulation key of a 64-byte ``d || z`` seed."""
        ...

    def encapsulate(self, algorithm: str, public_key: bytes) -> tuple[bytes, bytes]:
        """(ciphertext, shared secret) for ``public_key``."""
        ...

    def decapsulate(self, algorithm: str, seed: bytes, ciphertext: bytes) -> bytes:
        """The shared secret of ``ciphertext`` under the key of ``seed``."""
        ...


def _check(algorithm: str, seed: bytes | None = None) -> None:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown ML-KEM parameter set {algorithm!r}; expected {ALGORITHMS}")
    if seed is not None and len(seed) != P.MLKEM_SEED_SIZE:
        raise ValueError(f"an ML-KEM seed is {P.MLKEM_SEED_SIZE} bytes")


class CryptographyBackend:
    """ML-KEM from `cryptography` (OpenSSL): the default and the one HPKE runs on."""

    name = "cryptography"
    _PRIVATE: Mapping[str, Any] = {
        "ML-KEM-768": mlkem.MLKEM768PrivateKey,
        "ML-KEM-1024": mlkem.MLKEM1024PrivateKey,
    }
    _PUBLIC: Mapping[str, Any] = {
        "ML-KEM-768": mlkem.MLKEM768PublicKey,
        "ML-KEM-1024": mlkem.MLKEM1024PublicKey,
    }

    def public_key(self, algorithm: str, seed: bytes) -> bytes:
        """The encapsulation key of a 64-byte ``d || z`` seed (FIPS 203 KeyGen_internal)."""
        _check(algorithm, seed)
        key = self._PRIVATE[algorithm].from_seed_bytes(seed)
        return bytes(key.public_key().public_bytes_raw())

    def encapsulate(self, algorithm: str, public_key: bytes) -> tuple[bytes, bytes]:
        """(ciphertext, shared secret) for ``public_key``; ``InvalidDataError`` if it is no key."""
        _check(algorithm)
        try:
            key = self._PUBLIC[algorithm].from_public_bytes(public_key)
        except ValueError as exc:
            raise InvalidDataError(f"not a valid {algorithm} public key") from exc
        secret, ciphertext = key.encapsulate()
        return bytes(ciphertext), bytes(secret)

    def decapsulate(self, algorithm: str, seed: bytes, ciphertext: bytes) -> bytes:
        """The shared secret of ``ciphertext`` under the key of ``seed`` (implicit rejection: a
        tampered ciphertext gives a pseudo-random secret, not an error); ``InvalidDataError``
        for a ciphertext of the wrong length."""
        _check(algorithm, seed)
        key = self._PRIVATE[algorithm].from_seed_bytes(seed)
        try:
            return bytes(key.decapsulate(ciphertext))
        except ValueError as exc:
            raise InvalidDataError(f"not a valid {algorithm} ciphertext") from exc

    def __repr__(self) -> str:
        return "CryptographyBackend()"


@dataclass(frozen=True)
class LiboqsProbe:
    """What the probe found, without importing ``oqs``."""

    library: str | None  # the liboqs shared library (a name or a path), or None
    module: bool  # whether liboqs-python is installed (found, not imported)

    @property
    def available(self) -> bool:
        """True when both the liboqs shared library and liboqs-python were found."""
        return self.library is not None and self.module

    @property
    def reason(self) -> str:
        """One line for people: what was found, or what is missing and how to install it."""
        if self.available:
            return f"liboqs found ({self.library})"
        if self.library is None:
            return "the liboqs shared library is not installed (system, $OQS_INSTALL_PATH, ~/_oqs)"
        return "liboqs-python is not installed (pip install 'pqselfenc[oqs]')"


def probe_liboqs(
    environ: Mapping[str, str] | None = None,
    find_library: Callable[[str], str | None] = ctypes.util.find_library,
) -> LiboqsProbe:
    """Look for liboqs and liboqs-python; never imports ``oqs`` (see the module docstring)."""
    env = os.environ if environ is None else environ
    library = _library_under(_install_root(env)) or find_library("oqs")
    return LiboqsProbe(library=library, module=importlib.util.find_spec("oqs") is not None)


def _install_root(env: Mapping[str, str]) -> Path | None:
    """Where liboqs-python looks first: $OQS_INSTALL_PATH, else its default ~/_oqs."""
    if env.get("OQS_INSTALL_PATH"):
        return Path(env["OQS_INSTALL_PATH"])
    return Path(env["HOME"]) / "_oqs" if env.get("HOME") else None


def _library_under(root: Path | None) -> str | None:
    if root is None:
        return None
    for sub in _LIB_DIRS:
        folder = root / sub
        for pattern in _LIB_PATTERNS:
            found = sorted(folder.glob(pattern)) if folder.is_dir() else []
            if found:
                return str(found[0])
    return None


class OqsBackend:
    """ML-KEM from liboqs via liboqs-python (>= 0.14 for seeded key generation)."""

    name = "liboqs"

    def __init__(self, probe: LiboqsProbe | None = None) -> None:
        probe = probe_liboqs() if probe is None else probe
        if not probe.available:
            raise EncryptionError(f"the liboqs backend is unavailable: {probe.reason}")
        self._oqs = _import_oqs()

    def _kem(self, algorithm: str) -> Any:
        try:
            return self._oqs.KeyEncapsulation(algorithm)
        except Exception as exc:  # oqs.MechanismNotSupportedError and friends
            raise EncryptionError(f"liboqs does not provide {algorithm}") from exc

    def public_key(self, algorithm: str, seed: bytes) -> bytes:
        """The encapsulation key of a 64-byte ``d || z`` seed, via liboqs' seeded key generation."""
        _check(algorithm, seed)
        with self._kem(algorithm) as kem:
            return bytes(_call(kem.generate_keypair_seed, seed))

    def encapsulate(self, algorithm: str, public_key: bytes) -> tuple[bytes, bytes]:
        """(ciphertext, shared secret) for ``public_key``; ``InvalidDataError`` for a key of the
        wrong length."""
        _check(algorithm)
        with self._kem(algorithm) as kem:
            if len(public_key) != kem.details["length_public_key"]:
                raise InvalidDataError(f"not a valid {algorithm} public key")
            ciphertext, secret = _call(kem.encap_secret, public_key)
        return bytes(ciphertext), bytes(secret)

    def decapsulate(self, algorithm: str, seed: bytes, ciphertext: bytes) -> bytes:
        """The shared secret of ``ciphertext`` under the key of ``seed`` (implicit rejection, as
        FIPS 203); ``InvalidDataError`` for a ciphertext of the wrong length."""
        _check(algorithm, seed)
        with self._kem(algorithm) as kem:
            if len(ciphertext) != kem.details["length_ciphertext"]:
                raise InvalidDataError(f"not a valid {algorithm} ciphertext")
            _call(kem.generate_keypair_seed, seed)
            return bytes(_call(kem.decap_secret, ciphertext))

    def __repr__(self) -> str:
        return "OqsBackend()"


def _import_oqs() -> ModuleType:
    try:
        with warnings.catch_warnings():
            # liboqs-python warns when the C library's version differs from its own.
            warnings.simplefilter("ignore", UserWarning)
            return importlib.import_module("oqs")
    except (Exception, SystemExit) as exc:
        raise EncryptionError("liboqs-python failed to load liboqs") from exc


def _call(fn: Callable[..., Any], *args: bytes) -> Any:
    try:
        result = fn(*args)
    except Exception as exc:
        raise EncryptionError("liboqs operation failed") from exc
    if result == 0 or result is None:  # older liboqs-python signals failure with 0
        raise EncryptionError("liboqs operation failed")
    return result


def get_backend(name: str = "cryptography") -> KemBackend:
    """A backend by name: ``"cryptography"`` (default) or ``"liboqs"`` (if installed)."""
    if name == CryptographyBackend.name:
        return CryptographyBackend()
    if name == OqsBackend.name:
        return OqsBackend()
    raise ValueError(f"unknown KEM backend {name!r}; expected 'cryptography' or 'liboqs'")
