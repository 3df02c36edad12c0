import inspect
from types import ModuleType

import pqselfenc
import pqselfenc.error
import pqselfenc.kem
import pqselfenc.keys


def test_public_api_is_pinned() -> None:
    assert pqselfenc.__all__ == sorted(pqselfenc.__all__)
    assert set(pqselfenc.__all__) == {
        "ChunkConfig",
        "ChunkInfo",
        "ChunkStore",
        "CompressionConfig",
        "DataMap",
        "DirectoryChunkStore",
        "EncryptedChunk",
        "EncryptionConfig",
        "MemoryChunkStore",
        "ParallelConfig",
        "SelfEncryptor",
        "__version__",
    }
    for name in pqselfenc.__all__:
        assert getattr(pqselfenc, name) is not None


def test_error_tree_roots_at_error() -> None:
    for name in pqselfenc.error.__all__:
        cls = getattr(pqselfenc.error, name)
        assert issubclass(cls, pqselfenc.error.Error)


def test_error_names_are_pinned_and_drawn_in_the_tree() -> None:
    names = pqselfenc.error.__all__
    assert names == sorted(names)
    assert set(names) == {
        "AuditError",
        "ChunkNotFound",
        "ChunkStoreError",
        "DecryptionError",
        "EncryptionError",
        "Error",
        "EscrowError",
        "IntegrityError",
        "InvalidDataError",
        "KeyDestroyedError",
        "KeyNotFound",
        "KeyStoreError",
        "KeyringUnavailable",
        "RollbackError",
        "SignatureError",
        "StoreLockedError",
        "TokenKeyError",
        "TokenPinError",
        "TokenUnavailable",
        "WeakSecretError",
        "WrongPassphrase",
    }
    tree = pqselfenc.error.__doc__ or ""
    for name in names:
        assert getattr(pqselfenc.error, name).__doc__, name
        assert f" {name} " in tree, f"{name} is not drawn in the error tree"


def isort_order(names: list[str]) -> list[str]:
    """``names`` in the order ruff keeps ``__all__`` (RUF022): CONSTANTS, Classes, functions."""
    return sorted(names, key=lambda n: (0 if n.isupper() else 1 if n[:1].isupper() else 2, n))


def undocumented(module: ModuleType) -> list[str]:
    """Names in ``module.__all__`` without a docstring of their own (a class's own ``__doc__``,
    not a dataclass's generated signature); a constant counts as documented when the module's
    docstring names it."""
    missing = []
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj):
            doc = vars(obj).get("__doc__") or ""
            documented = bool(doc.strip()) and not doc.startswith(f"{name}(")
        elif callable(obj):
            documented = bool((obj.__doc__ or "").strip())
        else:
            documented = f"``{name}``" in (module.__doc__ or "")
        if not documented:
            missing.append(name)
    return missing


def test_kem_api_is_pinned() -> None:
    names = pqselfenc.kem.__all__
    assert names == isort_order(names)
    assert set(names) == {
        "SIGNATURE_ALGORITHMS",
        "SUITE_NAMES",
        "CryptographyBackend",
        "EnvelopeInfo",
        "Identity",
        "KemBackend",
        "LiboqsProbe",
        "OqsBackend",
        "PrivateKey",
        "PublicKey",
        "Recipient",
        "SigningKey",
        "Stanza",
        "VerifyingKey",
        "generate_identity",
        "get_backend",
        "inspect",
        "open_sealed",
        "probe_liboqs",
        "seal",
    }
    assert undocumented(pqselfenc.kem) == []


def test_keys_api_is_pinned() -> None:
    names = pqselfenc.keys.__all__
    assert names == isort_order(names)
    assert set(names) == {
        "AuditLog",
        "AuditReport",
        "EscrowPolicy",
        "FileBackend",
        "Identity",
        "KeyConfig",
        "KeyState",
        "KeyStore",
        "KeyVersion",
        "KeyringBackend",
        "RecipientDirectory",
        "RecipientEntry",
        "RotationDue",
        "SecretBackend",
        "estimate_passphrase_bits",
    }
    assert undocumented(pqselfenc.keys) == []


def test_the_documentation_check_sees_a_gap() -> None:
    probe = ModuleType("probe", "Probe: ``DOCUMENTED`` is named here.")
    probe.__all__ = ["DOCUMENTED", "UNNAMED", "Bare", "f"]  # type: ignore[attr-defined]
    probe.DOCUMENTED, probe.UNNAMED = 1, 2  # type: ignore[attr-defined]

    class Bare:
        pass

    def f() -> None:
        pass

    probe.Bare, probe.f = Bare, f  # type: ignore[attr-defined]
    assert undocumented(probe) == ["UNNAMED", "Bare", "f"]
