import pqselfenc
import pqselfenc.error


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
        "IntegrityError",
        "InvalidDataError",
        "KeyDestroyedError",
        "KeyNotFound",
        "KeyStoreError",
        "KeyringUnavailable",
        "SignatureError",
        "WeakSecretError",
        "WrongPassphrase",
    }
    tree = pqselfenc.error.__doc__ or ""
    for name in names:
        assert getattr(pqselfenc.error, name).__doc__, name
        assert f" {name} " in tree, f"{name} is not drawn in the error tree"
