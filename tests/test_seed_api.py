"""The seed page's API, as its users read it: every Python block of the page runs, in the page's
order, with ``self_encryption`` replaced by ``pqselfenc`` and only its placeholders filled (the
blocks are copied verbatim in tests/seed_examples/). Then the builder forms, the old spellings
the new ones must not break, and what each new field does wherever the config goes."""

from __future__ import annotations

import ast
import asyncio
import os
import re
import tomllib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from _keys_support import needs_secret_service

from pqselfenc import (
    ChunkConfig,
    ChunkInfo,
    CompressionConfig,
    DataMap,
    EncryptionConfig,
    MemoryChunkStore,
    ParallelConfig,
    SelfEncryptor,
)
from pqselfenc.core._stream import StreamDecryption
from pqselfenc.error import (
    ChunkNotFound,
    ChunkStoreError,
    EncryptionError,
    IntegrityError,
    InvalidDataError,
    KeyringUnavailable,
    KeyStoreError,
)
from pqselfenc.keys import KeyConfig, KeyStore
from pqselfenc.keys import config as keys_config
from pqselfenc.memory import CacheConfig, CachingChunkStore, MemoryConfig
from pqselfenc.parallel import ParallelEncryptor, WorkerPool
from pqselfenc.streaming import (
    FinalizedMap,
    StoredChunks,
    StreamDecryptor,
    StreamEncryptor,
    decrypt_file,
    encrypt_file,
)
from tests._stream_helpers import CountingStore, FailingStore, LazyExecutor

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "tests" / "seed_examples" / "self_encryption_page.md"
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.DOTALL | re.MULTILINE)
PASSPHRASE = "gravel orbit candle mosaic tundra"
FAIL_KEYRING = "keyring.backends.fail.Keyring"
MiB = 1 << 20
DATA = os.urandom(3 * MiB + 12345)


def page_blocks(lang: str = "python") -> list[str]:
    """The page's blocks of ``lang``, in order, as users run them (``self_encryption`` ->
    ``pqselfenc``)."""
    found = [body for kind, body in BLOCK.findall(PAGE.read_text()) if kind == lang]
    return [b.replace("self_encryption", "pqselfenc").replace("self-encryption", "pqselfenc")
            for b in found]  # fmt: skip


def fill(block: str, *replacements: tuple[str, str]) -> str:
    """``block`` with each placeholder replaced; each must occur exactly once (so the fixture
    cannot drift away from what this test fills)."""
    for old, new in replacements:
        assert block.count(old) == 1, f"placeholder not found once: {old!r}"
        block = block.replace(old, new)
    return block


def run(block: str, namespace: dict[str, Any], name: str) -> None:
    """Execute ``block`` in ``namespace``; top-level ``await``/``async for`` run on a loop."""
    code = compile(block, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)
    if asyncio.iscoroutine(result):
        asyncio.run(result)


@pytest.fixture
def page_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A temp pqselfenc home, no OS keyring (the file backend) and its passphrase."""
    home = tmp_path / "home"
    monkeypatch.setenv("PQSELFENC_HOME", str(home))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", FAIL_KEYRING)
    monkeypatch.setenv("PQSELFENC_PASSPHRASE", PASSPHRASE)
    return home


# The placeholders of the custom store block: a dict behind the two methods.
STORE_FILLS = (
    ("class MyChunkStore(ChunkStore):\n",
     "class MyChunkStore(ChunkStore):\n    def __init__(self):\n        self.kept = {}\n\n"),
    ("        # Store chunk and return info\n        pass\n",
     "        info = ChunkInfo.for_chunk(chunk)\n        self.kept[info.name] = bytes(chunk)\n"
     "        return info\n"),
    ("        # Retrieve chunk using info\n        pass\n",
     "        return self.kept[info.name]\n"),
)  # fmt: skip

# The error block's handlers hold only a comment (not valid Python): each records its branch.
ERROR_FILLS = tuple(
    (f"    # Handle {what}\n", f"    # Handle {what}\n    caught = {what!r}\n")
    for what in ("invalid data", "storage errors", "encryption errors", "other errors")
)


def test_the_fixture_is_the_page(page_env: Path) -> None:
    """Eight Python blocks and the install block, as the page has them."""
    assert len(page_blocks()) == 8
    text = PAGE.read_text()
    assert "from self_encryption import SelfEncryptor" in text  # verbatim, not pre-replaced
    page = Path("/work/shared/seed/self-encryption-library.md")
    if page.exists():  # the original (not in CI): the fixture is its blocks, unchanged
        assert BLOCK.findall(text) == BLOCK.findall(page.read_text())


def test_every_page_block_runs_in_order(page_env: Path) -> None:
    basic, custom, store_block, stream, parallel, memory, keys, errors = page_blocks()
    received: list[bytes] = []

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(DATA), 100_000):
            yield DATA[i : i + 100_000]

    async def process_chunk(chunk: bytes) -> None:
        received.append(chunk)

    ns: dict[str, Any] = {"data": DATA, "stream": pieces(), "process_chunk": process_chunk}

    run(basic, ns, "basic")
    assert ns["decrypted"] == DATA and isinstance(ns["data_map"], DataMap)
    assert {c.name for c in ns["chunks"]} == {c.name for c in ns["data_map"].chunks}

    run(custom, ns, "custom configuration")
    config = ns["config"]
    assert config.compression == CompressionConfig("zstd", 3)
    assert config.parallel == ParallelConfig(4, MiB) and ns["ChunkConfig"] is ChunkConfig
    dm, chunks = ns["encryptor"].encrypt()
    assert SelfEncryptor.from_data_map(dm, chunks, config).decrypt() == DATA

    run(fill(store_block, *STORE_FILLS), ns, "custom chunk store")
    kept_map, kept = ns["encryptor"].encrypt()
    assert kept == [] and len(ns["store"].kept) == len(kept_map.chunks) == 4
    assert SelfEncryptor.from_data_map(kept_map, ns["store"]).decrypt() == DATA

    run(stream, ns, "streaming")
    data_map, chunks = ns["data_map"], ns["chunks"]
    assert b"".join(received) == DATA
    assert data_map == SelfEncryptor(DATA, config).encrypt()[0]  # same bytes, same config
    assert isinstance(chunks, StoredChunks) and len(chunks) == len(data_map.chunks)
    stored = {p.name for p in (page_env / "chunks").rglob("*") if p.is_file()}
    assert {c.hex_name for c in data_map.chunks} <= stored  # the default store, named in docs

    run(parallel, ns, "parallel")
    try:
        assert ns["data_map"] == SelfEncryptor(DATA).encrypt()[0]
        assert SelfEncryptor.from_data_map(ns["data_map"], ns["chunks"]).decrypt() == DATA
    finally:
        ns["pool"].close()

    run(memory, ns, "memory")
    assert ns["config"].memory == MemoryConfig(max_total_memory=1 << 30, max_chunk_cache=100 * MiB)
    assert ns["config"].cache == CacheConfig(capacity=1000, ttl=300)

    run(keys, ns, "keys")
    key_store, encryptor = ns["store"], ns["encryptor"]
    assert isinstance(key_store, KeyStore) and key_store.directory == page_env / "keys"
    assert key_store.config.rotation_interval == timedelta(days=30)
    assert encryptor.config.convergence_secret == key_store.convergence_secret()
    assert encryptor.config.keys == key_store.config == ns["config"].keys

    ns["caught"] = None
    run(fill(errors, *ERROR_FILLS), ns, "errors")
    assert ns["caught"] is None
    assert SelfEncryptor.from_data_map(ns["data_map"], ns["chunks"], key_store=key_store).decrypt()
    key_store.close()


@pytest.mark.parametrize(
    ("failure", "branch"),
    [
        (ChunkStoreError("disk full"), "storage errors"),
        (ChunkNotFound("gone"), "storage errors"),
        (InvalidDataError("bad"), "invalid data"),
        (RuntimeError("a store's own exception"), "encryption errors"),  # "worker failed"
        (IntegrityError("tampered"), "other errors"),
    ],
)
def test_the_error_block_sorts_pqselfenc_errors(failure: Exception, branch: str) -> None:
    errors = page_blocks()[-1]
    ns: dict[str, Any] = {"caught": None}
    ns["encryptor"] = SelfEncryptor(DATA, chunk_store=FailingStore(1, failure))
    run(fill(errors, *ERROR_FILLS), ns, "errors")
    assert ns["caught"] == branch


def test_which_operations_raise_which_error(page_env: Path, tmp_path: Path) -> None:
    """The classes of docs/guide.md's table, raised by the real operations it names."""
    with pytest.raises(InvalidDataError):
        DataMap.from_bytes(b"not a map")
    store = MemoryChunkStore()
    data_map, _ = SelfEncryptor(DATA, chunk_store=store).encrypt()
    with pytest.raises(ChunkNotFound):
        SelfEncryptor.from_data_map(data_map, []).decrypt()
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ChunkStoreError):
        from pqselfenc import DirectoryChunkStore

        DirectoryChunkStore(tmp_path / "file")
    secret = EncryptionConfig(convergence_secret=bytes(32))
    secret_map, chunks = SelfEncryptor(DATA, secret).encrypt()
    with pytest.raises(EncryptionError, match="convergence secret"):
        SelfEncryptor.from_data_map(secret_map, chunks).decrypt()
    name = data_map.chunks[1].name
    store.delete(ChunkInfo(name))
    store._chunks[name] = b"x" * 100  # type: ignore[attr-defined]  # a store that lies
    with pytest.raises(IntegrityError):
        SelfEncryptor.from_data_map(data_map, store).decrypt()
    with pytest.raises(TypeError):
        SelfEncryptor("text")  # type: ignore[arg-type]  # misuse is TypeError/ValueError
    with pytest.raises(ValueError):
        EncryptionConfig(chunk_size=0)


def test_the_extras_the_install_block_names_exist() -> None:
    (install,) = page_blocks("bash")
    assert "pip install pqselfenc[compression,parallel]" in install
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["name"] == "pqselfenc"
    assert {"compression", "parallel"} <= set(meta["optional-dependencies"])


# -- builder forms ---------------------------------------------------------------------------


def test_builders_equal_the_keyword_form() -> None:
    memory = MemoryConfig(max_chunk_cache=100 * MiB, max_total_memory=1 << 30)
    cache = CacheConfig(capacity=1000, ttl=300)
    keys = KeyConfig(rotation_interval=30 * 24 * 60 * 60, min_entropy=256, quantum_safe=True)
    built = (
        EncryptionConfig()
        .with_chunk_size(MiB)
        .with_min_chunks(3)
        .with_compression(CompressionConfig(algorithm="zstd", level=3))
        .with_parallel(ParallelConfig(max_threads=4, chunk_size=MiB))
        .with_memory(memory)
        .with_cache(cache)
        .with_keys(keys)
    )
    assert built == EncryptionConfig(
        chunk_size=MiB, min_chunks=3, compression=CompressionConfig("zstd", 3),
        parallel=ParallelConfig(4, MiB), memory=memory, cache=cache, keys=keys,
    )  # fmt: skip
    assert built.with_chunk_config(ChunkConfig(MiB, 3)) == built
    assert built.with_cache(None).cache is None and built.with_keys(None).keys is None
    assert "memory=MemoryConfig(" in repr(built) and "keys=KeyConfig(" in repr(built)


@pytest.mark.parametrize(
    ("field", "value"),
    [("memory", None), ("memory", 5), ("cache", 300), ("keys", {"min_entropy": 256})],
)
def test_config_fields_refuse_the_wrong_type(field: str, value: object) -> None:
    with pytest.raises(TypeError, match=field):
        EncryptionConfig(**{field: value})  # type: ignore[arg-type]


def test_key_config_takes_seconds_or_a_timedelta() -> None:
    assert KeyConfig(rotation_interval=30 * 24 * 60 * 60) == KeyConfig(timedelta(days=30))
    assert KeyConfig(rotation_interval=90.5).rotation_interval == timedelta(seconds=90.5)
    assert KeyConfig().rotation_interval == timedelta(days=90)
    for bad in (0, -1, 0.0, float("nan"), float("inf"), timedelta(0), 10**20):
        with pytest.raises(ValueError):
            KeyConfig(rotation_interval=bad)
    for wrong in (True, "30d", None):
        with pytest.raises(TypeError):
            KeyConfig(rotation_interval=wrong)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        KeyConfig(quantum_safe="yes")  # type: ignore[arg-type]
    assert keys_config.KeyConfig is KeyConfig  # one class, wherever it is imported from
    from pqselfenc.core._keyconfig import KeyConfig as CoreKeyConfig

    assert CoreKeyConfig is KeyConfig


# -- the old spellings ------------------------------------------------------------------------


CFG = EncryptionConfig(chunk_size=4096, min_chunks=3, parallel=ParallelConfig(max_threads=2))
SMALL = os.urandom(10 * 4096 + 17)


async def _write(enc: StreamEncryptor, data: bytes = SMALL) -> None:
    for i in range(0, len(data), 1000):
        await enc.write(data[i : i + 1000])


def test_finalize_is_still_the_data_map() -> None:
    """``data_map = await enc.finalize()``: a DataMap in every way, as before."""
    from pqselfenc.kem import generate_identity, open_sealed, seal

    store = MemoryChunkStore()

    async def go() -> FinalizedMap:
        enc = StreamEncryptor(CFG, chunk_store=store)
        await _write(enc)
        return await enc.finalize()

    data_map = asyncio.run(go())
    ref, _ = SelfEncryptor(SMALL, CFG).encrypt()
    assert isinstance(data_map, DataMap) and data_map == ref and ref == data_map
    assert hash(data_map) == hash(ref) and data_map.to_bytes() == ref.to_bytes()
    assert data_map.chunks == ref.chunks and len(data_map) == len(ref)
    alice = generate_identity("x-wing")
    assert open_sealed(seal(data_map, [alice.recipient()]), [alice]) == ref
    assert SelfEncryptor.from_data_map(data_map, store, CFG).decrypt() == SMALL
    first, chunks = data_map  # and the pair, the plain map first
    assert type(first) is DataMap and first == ref and chunks == []
    import copy
    import pickle

    assert pickle.loads(pickle.dumps(data_map)) == ref and type(copy.copy(data_map)) is DataMap


def test_a_stream_without_a_store_uses_the_default_store(page_env: Path) -> None:
    """``StreamEncryptor(cfg)`` then ``enc.chunks``: the chunks as a list would hold them."""

    async def go() -> tuple[FinalizedMap, StreamEncryptor]:
        enc = StreamEncryptor(CFG)
        assert enc.chunks == []
        await _write(enc)
        return await enc.finalize(), enc

    result, enc = asyncio.run(go())
    _, ref_chunks = SelfEncryptor(SMALL, CFG).encrypt()
    got = [(c.name, c.content) for c in enc.chunks]
    assert got == [(c.name, c.content) for c in ref_chunks]
    assert enc.chunks is result.encrypted_chunks and enc.store.root == page_env / "chunks"
    import pickle

    assert pickle.loads(pickle.dumps(result)) == result  # the chunks view stays behind
    assert StreamDecryptor.from_data_map(result, enc.chunks, CFG).read_range(5, 10) == SMALL[5:15]
    assert b"".join(StreamDecryptor.from_data_map(result, config=CFG)) == SMALL


def test_the_default_store_is_logged_and_never_created_by_a_reader(
    page_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_map, _ = SelfEncryptor(SMALL, CFG).encrypt()
    with pytest.raises(ChunkStoreError, match=r"default store .* does not exist"):
        StreamDecryptor.from_data_map(data_map, config=CFG)
    assert not page_env.exists()
    tiny, _ = SelfEncryptor(b"ab").encrypt()  # inline content: no store needed, none opened
    assert b"".join(StreamDecryptor.from_data_map(tiny)) == b"ab"
    with caplog.at_level("INFO", logger="pqselfenc"):
        StreamEncryptor(CFG)
    assert f"default chunk store {page_env / 'chunks'}" in caplog.text


def test_stored_chunks_hold_every_level_of_a_hierarchical_map(page_env: Path) -> None:
    cfg = EncryptionConfig(chunk_size=16, min_chunks=3, parallel=ParallelConfig(max_threads=1))
    data = os.urandom(16 * 4200)

    async def go() -> tuple[DataMap, StoredChunks]:
        enc = StreamEncryptor(cfg)
        await enc.write(data)
        data_map, chunks = await enc.finalize()
        assert isinstance(chunks, StoredChunks)
        return data_map, chunks

    data_map, chunks = asyncio.run(go())
    ref_map, ref_chunks = SelfEncryptor(data, cfg).encrypt()
    assert data_map.child == 1 and data_map == ref_map
    assert chunks.names == sorted(c.name for c in ref_chunks)
    assert chunks[0] == ref_chunks[0] and chunks[-2:] == ref_chunks[-2:]
    assert SelfEncryptor.from_data_map(data_map, chunks, cfg).decrypt() == data


def test_old_keywords_win_over_the_config(tmp_path: Path) -> None:
    """``memory=`` / ``cache=`` given to a stream or file helper win over the config's."""
    tiny = CFG.with_memory(MemoryConfig(max_total_memory=4096))  # below what a stream needs
    roomy = MemoryConfig(max_total_memory=1 << 20)
    store = MemoryChunkStore()
    with pytest.raises(ValueError, match="max_total_memory=4096"):
        StreamEncryptor(tiny, store)
    StreamEncryptor(tiny, store, memory=roomy)
    (tmp_path / "in").write_bytes(SMALL)
    with pytest.raises(ValueError, match="max_total_memory=4096"):
        encrypt_file(tmp_path / "in", store, tiny)
    data_map = encrypt_file(tmp_path / "in", store, tiny, memory=roomy)
    decrypt_file(data_map, store, tmp_path / "out", tiny, memory=roomy)
    assert (tmp_path / "out").read_bytes() == SMALL
    cached = CFG.with_cache(CacheConfig(capacity=3))
    dec = StreamDecryptor.from_data_map(data_map, store, cached, cache=CacheConfig(capacity=7))
    assert isinstance(dec.store, CachingChunkStore) and dec.store.cache.capacity == 7


# -- the new fields take effect wherever the config goes ----------------------------------------


def test_config_cache_reaches_every_reader() -> None:
    store = CountingStore()
    cfg = CFG.with_cache(CacheConfig(capacity=100)).with_memory(
        MemoryConfig(max_chunk_cache=1 << 20)
    )
    data_map, _ = SelfEncryptor(SMALL, cfg, chunk_store=store).encrypt()
    reader = SelfEncryptor.from_data_map(data_map, store, cfg)
    assert reader.read_range(0, 100) == reader.read_range(0, 100) == SMALL[:100]
    assert len(store.fetched) == 1  # the second read came from the cache
    parallel = ParallelEncryptor.from_data_map(data_map, store, cfg)
    assert parallel.decrypt() == SMALL and parallel.read_range(0, 10) == SMALL[:10]
    dec = StreamDecryptor.from_data_map(data_map, store, cfg)
    assert isinstance(dec.store, CachingChunkStore) and dec.store.max_bytes == 1 << 20
    file_reader = StreamDecryption(data_map, store, cfg)  # what decrypt_file reads through
    assert isinstance(file_reader.store, CachingChunkStore)
    plain = StreamDecryptor.from_data_map(data_map, store, CFG)
    assert not isinstance(plain.store, CachingChunkStore)


@pytest.mark.parametrize("budget", [1, 3, 100])
def test_config_memory_bounds_self_encryptor_work_in_flight(budget: int) -> None:
    cfg = EncryptionConfig(chunk_size=64, parallel=ParallelConfig(max_threads=8))
    cfg = cfg.with_memory(MemoryConfig(max_total_memory=budget * 64))
    data = os.urandom(64 * 50)
    executor = LazyExecutor()
    data_map, chunks = SelfEncryptor(data, cfg, executor=executor).encrypt()
    window = budget  # the workers alone would take 2 * 8 * (1 MiB // 64) tasks
    assert executor.max_queued <= window + 1
    reader = LazyExecutor()
    assert SelfEncryptor.from_data_map(data_map, chunks, cfg, executor=reader).decrypt() == data
    assert reader.max_queued <= window + 1
    assert data_map == SelfEncryptor(data, EncryptionConfig(chunk_size=64)).encrypt()[0]


def test_parallel_encryptor_keeps_the_config_fields() -> None:
    cfg = CFG.with_memory(MemoryConfig(max_total_memory=1 << 20)).with_cache(CacheConfig())
    with WorkerPool(3) as pool:
        enc = ParallelEncryptor(SMALL, cfg, worker_pool=pool)
        assert enc.config.memory == cfg.memory and enc.config.cache == cfg.cache
        assert enc.config.parallel.max_threads == 3
        data_map, chunks = enc.encrypt()
    assert SelfEncryptor.from_data_map(data_map, chunks).decrypt() == SMALL


# -- KeyStore(config) and the key store's part in an encryptor ----------------------------------


def test_key_store_from_a_config_opens_the_default_home(page_env: Path) -> None:
    policy = KeyConfig(rotation_interval=7 * 24 * 3600, domain="team")
    with KeyStore(EncryptionConfig(keys=policy)) as first:
        first.generate("alice")
        secret = first.convergence_secret()
        assert first.config == policy and first.directory == page_env / "keys"
    with KeyStore(policy) as again:  # reopens the same store (its backend: the file)
        assert "alice" in again.identities and again.convergence_secret() == secret
        assert repr(again).endswith("backend='file')")
    with KeyStore() as default_policy:
        assert default_policy.config == KeyConfig()
        assert default_policy.convergence_secret() != secret  # the "default" domain
    reopened = KeyStore.open(page_env / "keys", passphrase=PASSPHRASE, config=policy)
    assert reopened.convergence_secret() == secret  # KeyStore.open(path, ...) stays
    with pytest.raises(TypeError):
        KeyStore("keys")  # type: ignore[arg-type]


def test_key_store_without_a_passphrase_says_what_to_set(
    page_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PQSELFENC_PASSPHRASE")
    with pytest.raises(KeyringUnavailable, match="set PQSELFENC_PASSPHRASE"):
        KeyStore(EncryptionConfig())
    assert not (page_env / "keys" / "keystore.json").exists()
    monkeypatch.setenv("PQSELFENC_PASSPHRASE", PASSPHRASE)
    KeyStore().close()
    monkeypatch.delenv("PQSELFENC_PASSPHRASE")
    with pytest.raises(KeyStoreError, match=r"no passphrase.*PQSELFENC_PASSPHRASE"):
        KeyStore()


def test_an_encryptor_takes_the_key_store_policy_and_refuses_another(page_env: Path) -> None:
    policy = KeyConfig(rotation_interval=30 * 24 * 3600)
    with KeyStore(policy) as store:
        enc = SelfEncryptor(SMALL, CFG, key_store=store)
        assert enc.config.keys == policy
        assert SelfEncryptor(SMALL, CFG.with_keys(policy), key_store=store).config.keys == policy
        other = CFG.with_keys(KeyConfig(domain="elsewhere"))
        with pytest.raises(ValueError, match=r"differ \(rotation_interval, domain\)"):
            SelfEncryptor(SMALL, other, key_store=store)
        with pytest.raises(ValueError, match="differ"):
            StreamEncryptor(other, MemoryChunkStore(), store)
        data_map, chunks = enc.encrypt()
        assert data_map.secret_id  # the store's convergence secret keyed the chunks
        with pytest.raises(EncryptionError, match="convergence secret"):
            SelfEncryptor.from_data_map(data_map, chunks).decrypt()
        assert SelfEncryptor.from_data_map(data_map, chunks, key_store=store).decrypt() == SMALL


@pytest.mark.keyring
@needs_secret_service
def test_key_store_from_a_config_prefers_the_os_keyring(
    secret_service: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PQSELFENC_PASSPHRASE", raising=False)
    with KeyStore(EncryptionConfig()) as store:
        assert repr(store).endswith("backend='keyring')")


def test_the_defaults_module_is_the_one_choice(
    page_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pqselfenc.core.stores.default import default_home
    from pqselfenc.keys import defaults

    assert default_home() == page_env
    monkeypatch.delenv("PQSELFENC_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(page_env / "xdg"))
    assert defaults.key_store_path() == page_env / "xdg" / "pqselfenc" / "keys"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(page_env / "user"))
    assert default_home() == page_env / "user" / ".local" / "share" / "pqselfenc"
    choice = defaults.choose_backend(page_env / "none")
    assert choice.kind == "file" and not choice.exists and choice.fallback
    assert defaults.choose_backend(page_env / "none", "keyring").kind == "keyring"
    with pytest.raises(ValueError):
        defaults.choose_backend(page_env / "none", "plaintext")


def test_the_cli_uses_the_library_choice(
    page_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command's home and backend choice are the library's, not copies of it."""
    import argparse

    from pqselfenc.cli import _keyring
    from pqselfenc.cli._output import Console
    from pqselfenc.cli._session import Session, home_dir
    from pqselfenc.core.stores.default import default_home
    from pqselfenc.keys import defaults

    assert home_dir() == default_home() == page_env and home_dir("elsewhere") == Path("elsewhere")
    asked: list[tuple[Path, str]] = []

    def choose(path: Path, wanted: str = "auto") -> defaults.BackendChoice:
        asked.append((path, wanted))
        return defaults.BackendChoice("file", False, "no keyring here")

    monkeypatch.setattr(defaults, "choose_backend", choose)
    session = Session(argparse.Namespace(backend="auto"), Console())
    assert _keyring._choose_backend(session, page_env / "keys", None) == "file"
    assert asked == [(page_env / "keys", "auto")]
    assert "no secure OS keyring (no keyring here)" in capsys.readouterr().err
