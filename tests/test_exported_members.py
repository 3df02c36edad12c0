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
