"""The scoped claims of threat-model/README.md, shown by running the attacks.

* Convergent encryption: a store operator who can guess content confirms a file
  (confirmation-of-file) and recovers a small unknown field of a known template
  (learn-the-remaining-information); a convergence secret unknown to them defeats both.
* Compression leaks how compressible each chunk is through its stored size; without
  compression the stored size is exactly the plaintext size plus 17 bytes.
* Forward secrecy holds only across rotate + rewrap + destroy: rotation alone leaves old
  envelopes open to whoever later steals the store; destroy shreds the old key; a DataMap opened
  before the destroy keeps working until the content is re-encrypted under a new convergence
  secret and the old chunks are deleted.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pqselfenc import (
    CompressionConfig,
    DirectoryChunkStore,
    EncryptionConfig,
    MemoryChunkStore,
    ParallelConfig,
    SelfEncryptor,
)
from pqselfenc.core import _primitives as P
from pqselfenc.error import ChunkNotFound, EncryptionError, KeyDestroyedError
from pqselfenc.keys import KeyConfig, KeyStore

ONE = ParallelConfig(max_threads=1)
CFG = EncryptionConfig(chunk_size=64, parallel=ONE)


def names_of(data: bytes, cfg: EncryptionConfig) -> set[bytes]:
    return {c.name for c in SelfEncryptor(data, cfg).encrypt()[1]}


def operator_view(data: bytes, cfg: EncryptionConfig) -> set[bytes]:
    """What the store operator sees: the names of the chunks a user stored."""
    store = MemoryChunkStore()
    SelfEncryptor(data, cfg, chunk_store=store).encrypt()
    return {info.name for info in store}


# -- convergent encryption ------------------------------------------------------------------------

LEAKED = b"Dear customer, the shared document is attached. " * 6


def letter(pin: int) -> bytes:
    """A form letter whose only unknown is a 3-digit PIN."""
    return (
        b"ACME bank. Account 4417 1234 0042 8800. Your new PIN is %03d. Keep it safe. " % pin
    ) * 3


def test_confirmation_of_file_works_without_a_convergence_secret() -> None:
    stored = operator_view(LEAKED, CFG)
    assert names_of(LEAKED, CFG) <= stored  # the guess is confirmed, no key needed
    assert not names_of(b"Another letter entirely. " * 12, CFG) <= stored  # a wrong guess fails


def test_confirmation_of_file_fails_against_an_unknown_convergence_secret() -> None:
    stored = operator_view(LEAKED, CFG.with_convergence_secret(os.urandom(32)))
    assert not names_of(LEAKED, CFG) & stored
    guessed_secret = CFG.with_convergence_secret(bytes(32))
    assert not names_of(LEAKED, guessed_secret) & stored


def _brute_force(stored: set[bytes], cfg: EncryptionConfig) -> int | None:
    for pin in range(1000):  # the attacker knows the template, not the PIN
        if names_of(letter(pin), cfg) <= stored:
            return pin
    return None


def test_learn_the_remaining_information_recovers_a_pin_without_a_secret() -> None:
    stored = operator_view(letter(731), CFG)
    assert _brute_force(stored, CFG) == 731


def test_learn_the_remaining_information_fails_with_a_convergence_secret() -> None:
    stored = operator_view(letter(731), CFG.with_convergence_secret(os.urandom(32)))
    assert _brute_force(stored, CFG) is None


# -- length leakage -------------------------------------------------------------------------------


def stored_sizes(data: bytes, cfg: EncryptionConfig) -> list[int]:
    store = MemoryChunkStore()
    data_map, _ = SelfEncryptor(data, cfg, chunk_store=store).encrypt()
    return [len(store.retrieve(info)) for info in data_map.chunks]


def test_without_compression_stored_size_is_plaintext_size_plus_17() -> None:
    a = os.urandom(64 * 3)
    b = b"\x00" * (64 * 3)
    assert stored_sizes(a, CFG) == stored_sizes(b, CFG) == [64 + 17] * 3


def test_compression_leaks_compressibility_through_size() -> None:
    zstd = CFG.with_compression(CompressionConfig("zstd", 3))
    random_sizes = stored_sizes(os.urandom(64 * 3), zstd)
    zero_sizes = stored_sizes(b"\x00" * (64 * 3), zstd)
    raw = 64 + P.CHUNK_OVERHEAD[P.SIV_FORMAT_VERSION]  # nonce 12, flag 1, tag 16
    assert random_sizes == [raw] * 3  # incompressible: stored raw
    assert all(z < raw for z in zero_sizes)  # an observer tells the two inputs apart


# -- forward secrecy, scoped --------------------------------------------------------------------

PASSPHRASE = "gravel orbit candle mosaic tundra"


def test_rotation_alone_gives_no_forward_secrecy(tmp_path: Path) -> None:
    """A thief who later copies the store (and learns the passphrase) opens an old envelope
    that was only rotated away from, not rewrapped and destroyed."""
    ks = KeyStore.open(tmp_path / "ks", config=KeyConfig(), passphrase=PASSPHRASE)
    ks.generate("alice")
    data_map = SelfEncryptor(b"old secret " * 30, CFG).encrypt()[0]
    recorded = ks.seal(data_map, ["alice"])  # the adversary records this envelope
    ks.rotate("alice")
    shutil.copytree(tmp_path / "ks", tmp_path / "stolen")
    thief = KeyStore.open(tmp_path / "stolen", config=KeyConfig(), passphrase=PASSPHRASE)
    assert thief.open_envelope(recorded) == data_map


def test_rotate_rewrap_destroy_then_reencrypt(tmp_path: Path) -> None:
    """The compromise runbook: after destroy, a store stolen later cannot open the recorded
    envelope; a DataMap opened before still decrypts the old chunks until the content is
    re-encrypted under a new convergence secret and the old chunks are deleted."""
    chunks = DirectoryChunkStore(tmp_path / "chunks")
    data = os.urandom(64 * 12)
    old_cfg = CFG.with_convergence_secret(os.urandom(32))
    ks = KeyStore.open(tmp_path / "ks", config=KeyConfig(), passphrase=PASSPHRASE)
    ks.generate("alice")
    data_map, _ = SelfEncryptor(data, old_cfg, chunk_store=chunks).encrypt()
    recorded = ks.seal(data_map, ["alice"])
    leaked_map = ks.open_envelope(recorded)  # the attacker got this DataMap (and the old secret)

    ks.rotate("alice")
    current = ks.rewrap(recorded)
    ks.destroy("alice", 1)
    shutil.copytree(tmp_path / "ks", tmp_path / "stolen")
    thief = KeyStore.open(tmp_path / "stolen", config=KeyConfig(), passphrase=PASSPHRASE)
    with pytest.raises(KeyDestroyedError):
        thief.open_envelope(recorded)
    assert ks.open_envelope(current) == data_map  # the owner still reads the rewrapped envelope
    assert SelfEncryptor.from_data_map(leaked_map, chunks, old_cfg).decrypt() == data

    new_cfg = CFG.with_convergence_secret(os.urandom(32))
    new_map, _ = SelfEncryptor(data, new_cfg, chunk_store=chunks).encrypt()
    old_names = {c.name for c in leaked_map.chunks}
    assert old_names.isdisjoint(c.name for c in new_map.chunks)
    with pytest.raises(EncryptionError, match="not the one"):
        SelfEncryptor.from_data_map(leaked_map, chunks, new_cfg).decrypt()
    for info in leaked_map.chunks:
        chunks.delete(info)
    with pytest.raises(ChunkNotFound):
        SelfEncryptor.from_data_map(leaked_map, chunks, old_cfg).decrypt()
    assert SelfEncryptor.from_data_map(new_map, chunks, new_cfg).decrypt() == data
