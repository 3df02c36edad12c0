"""destroy with a backend that refuses deletes (issue 18 item 7): intent, then the outcome.

The release before recorded ``destroy`` as a success before the secret was deleted; with a
keyring that refused the delete, the log said destroyed while the secret was still there, and
every later open retried, failed and so blocked every unrelated identity of the store.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _keys_support import PASSPHRASE, StoreFactory, small_map

from pqselfenc.error import KeyDestroyedError, KeyStoreError
from pqselfenc.keys import KeyState, KeyStore
from pqselfenc.keys.backends import FileBackend


class Refused(KeyStoreError):
    """What a backend that will not delete raises."""


def refuse_deletes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Make the file backend refuse every delete (a keyring that says no); the attempts."""
    attempts: list[tuple[str, int]] = []

    def refuse(self: FileBackend, name: str, version: int) -> bool:
        attempts.append((name, version))
        raise Refused(f"the backend refused to delete {name} v{version} (injected)")

    monkeypatch.setattr(FileBackend, "delete", refuse)
    return attempts


def destroys(ks: KeyStore) -> list[tuple[object, ...]]:
    return [(e["name"], e["version"], e["outcome"], e["detail"]) for e in ks.audit.events()
            if e["action"] == "destroy"]  # fmt: skip


def reopen(ks: KeyStore) -> KeyStore:
    return KeyStore.open(ks.directory, config=ks.config, passphrase=PASSPHRASE)


def test_a_refused_delete_is_recorded_as_such_and_never_blocks_the_store(
    open_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    ks = open_store()
    ks.generate("alice")
    ks.generate("bob")
    sealed = ks.seal(small_map(), to=["alice"])
    secret = ks.directory / "secrets" / "alice.v1.key"
    with monkeypatch.context() as patch:
        attempts = refuse_deletes(patch)
        with pytest.raises(Refused):
            ks.destroy("alice", 1)
        assert destroys(ks) == [("alice", 1, "intent", None), ("alice", 1, "failure", "Refused")]
        version = ks.identity("alice").version(1)
        assert version.state is KeyState.DESTROY_PENDING and not version.usable
        assert secret.exists()  # the truth: still there, and the log does not say otherwise
        with pytest.raises(KeyDestroyedError):
            ks.open_envelope(sealed)  # marked first: nothing uses it any more
        reopened = reopen(ks)  # the release before failed here, for every identity
        assert reopened.seal(small_map(), to=["bob"])  # unrelated identities work
        assert attempts == [("alice", 1), ("alice", 1)]  # retried once at open
        assert destroys(reopened)[-1] == ("alice", 1, "failure", "Refused")
        with pytest.raises(Refused):
            reopened.destroy("alice", 1)  # retried by hand, audited again
        assert len(attempts) == 3 and destroys(reopened)[-1][2] == "failure"
    finished = reopen(ks)  # the backend deletes again: open finishes the job
    assert not secret.exists()
    assert finished.identity("alice").version(1).state is KeyState.DESTROYED
    assert destroys(finished)[-1] == ("alice", 1, "success", "secret deleted")
    assert finished.audit.verify().ok
    assert destroys(reopen(ks)) == destroys(finished)  # nothing left to do: no more events


def test_destroy_again_finishes_a_pending_delete(
    open_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    ks = open_store()
    ks.generate("alice")
    with monkeypatch.context() as patch:
        refuse_deletes(patch)
        with pytest.raises(Refused):
            ks.destroy("alice", 1)
    done = ks.destroy("alice", 1)
    assert done.state is KeyState.DESTROYED
    assert [d[2] for d in destroys(ks)] == ["intent", "failure", "success"]


def test_a_destroyed_version_whose_secret_is_still_there_becomes_pending(
    open_store: StoreFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What the release before left behind (destroyed in the metadata, the secret not deleted)
    is found at open: if the secret cannot be deleted now, the version is marked pending (the
    truth) and the open goes on; once it can be, the version is destroyed again."""
    ks = open_store()
    ks.generate("alice")
    ks.generate("bob")
    secret = ks.directory / "secrets" / "alice.v1.key"
    shutil.copy(secret, tmp_path / "kept")
    ks.destroy("alice", 1)
    shutil.copy(tmp_path / "kept", secret)  # the secret "survived" its destroy
    with monkeypatch.context() as patch:
        refuse_deletes(patch)
        reopened = reopen(ks)
        assert reopened.identity("alice").version(1).state is KeyState.DESTROY_PENDING
        assert destroys(reopened)[-1] == ("alice", 1, "failure", "Refused")
        assert reopened.identity("bob").active is not None
    finished = reopen(ks)
    assert finished.identity("alice").version(1).state is KeyState.DESTROYED
    assert not secret.exists() and finished.audit.verify().ok


def test_a_planted_file_under_a_destroyed_name_is_deleted_and_said(
    open_store: StoreFactory,
) -> None:
    ks = open_store()
    ks.generate("alice")
    ks.destroy("alice", 1)
    planted = ks.directory / "secrets" / "alice.v1.key"
    planted.write_bytes(b"whatever")
    reopened = reopen(ks)
    assert not planted.exists()
    assert destroys(reopened)[-1] == ("alice", 1, "success", "deleted a secret left behind")
