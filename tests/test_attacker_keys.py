"""A skeptical reviewer's attacks on the key store, kept as tests.

The attacker can read and write the key store directory (every file in it, at any time; they
may have kept copies of its files from earlier) but holds neither the root secret nor the
passphrase nor the keyring session. Each test tries every way we could think of to break one
guarantee written in threat-model/keys.md; the last test pins what still works for them (the
documented gap), so a change that closes or widens it shows up here.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from _keys_support import PASSPHRASE, FakeClock, StoreFactory, small_map

from pqselfenc.error import Error, KeyNotFound, SignatureError
from pqselfenc.kem import PublicKey, generate_identity, seal
from pqselfenc.keys import KeyStore
from pqselfenc.keys.audit import canonical, chain_hash

Attack = Callable[[Path], None]


def reopen(directory: Path) -> KeyStore:
    return KeyStore.open(directory, passphrase=PASSPHRASE)


def log_lines(directory: Path) -> list[bytes]:
    return (directory / "audit.jsonl").read_bytes().splitlines(keepends=True)


def forge(after: bytes, **fields: object) -> bytes:
    last = json.loads(after)
    body = {"seq": last["seq"] + 1, "time": last["time"], "actor": "mallory", "action": "seal",
            "outcome": "success", "name": None, "key_id": None, "version": None,
            "fingerprint": None, "envelope_id": None, "detail": None, **fields}  # fmt: skip
    prev = bytes.fromhex(last["hash"])
    return canonical(dict(body, prev=prev.hex(), hash=chain_hash(prev, body).hex())) + b"\n"


@pytest.fixture
def replaced_bob(open_store: StoreFactory, tmp_path: Path) -> tuple[Path, bytes, str, str]:
    """A store where bob's key was replaced; the attacker kept keystore.json from before."""
    ks = open_store(checkpoint_every=4)
    ks.generate("alice")
    old_key = str(generate_identity().recipient())
    ks.recipients.add("bob", old_key)
    kept = (ks.directory / "keystore.json").read_bytes()
    new_key = str(generate_identity().recipient())
    ks.recipients.add("bob", new_key, replace_existing=True)
    ks.seal(small_map(), to=["bob"])
    ks.close()
    shutil.copytree(ks.directory, tmp_path / "pristine")
    return ks.directory, kept, old_key, new_key


def old_commit_line(directory: Path, kept: bytes) -> bytes:
    generation = json.loads(kept)["generation"]
    return next(x for x in log_lines(directory) if json.loads(x).get("generation") == generation)


ATTACKS: dict[str, Callable[[Path, bytes], None]] = {
    "keystore.json alone": lambda d, kept: None,
    "forged commit line": lambda d, kept: _append(d, forge(log_lines(d)[-1],
                                                  generation=json.loads(kept)["generation"])),
    "forged line with a copied MAC": lambda d, kept: _append(d, canonical(
        json.loads(forge(log_lines(d)[-1], generation=json.loads(kept)["generation"]))
        | {"mac": json.loads(log_lines(d)[-1])["mac"]}) + b"\n"),
    "replayed genuine commit line": lambda d, kept: _append(d, old_commit_line(d, kept)),
    "replayed genuine block": lambda d, kept: _append(d, b"".join(
        log_lines(d)[: log_lines(d).index(old_commit_line(d, kept)) + 1][-2:])),
    "stale staged file": lambda d, kept: (d / "keystore.json.staged").write_bytes(
        (Path(str(d).replace("/ks", "/pristine")) / "keystore.json").read_bytes()),
    "MACs stripped everywhere": lambda d, kept: (d / "audit.jsonl").write_bytes(b"".join(
        canonical({k: v for k, v in json.loads(x).items() if k != "mac"}) + b"\n"
        for x in log_lines(d))),
    "log deleted": lambda d, kept: [(d / n).unlink() for n in ("audit.jsonl", "audit.checkpoint")],
}


def _append(directory: Path, data: bytes) -> None:
    with (directory / "audit.jsonl").open("ab") as fh:
        fh.write(data)


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_attacker_with_write_access_cannot_bring_back_a_replaced_key(
    replaced_bob: tuple[Path, bytes, str, str], attack: Callable[[Path, bytes], None]
) -> None:
    directory, kept, _, new_key = replaced_bob
    (directory / "keystore.json").write_bytes(kept)
    attack(directory, kept)
    try:
        ks = reopen(directory)
    except Error:
        return  # refused: the guarantee holds
    assert ks.recipients.get("bob").public_key == new_key, "the replaced key came back"


def test_attacker_with_a_stolen_destroyed_key_gets_no_current_signature(
    open_store: StoreFactory, clock: FakeClock
) -> None:
    """alice v1's signing key was stolen; the owner rotated and destroyed v1. The attacker
    signs their content with it and hands it to every path that could bless it."""
    ks = open_store()
    ks.generate("alice")
    stolen = ks.signing_key("alice")
    clock.advance(days=40)
    ks.rotate("alice")
    ks.destroy("alice", 1)
    active = ks.identity("alice").active
    assert active is not None
    forged = seal(small_map(b"mallory's"), [PublicKey.parse(active.public_key)], stolen)
    for attempt in (lambda: ks.rewrap(forged), lambda: ks.rewrap(forged, sign_as="alice"),
                    lambda: ks.rewrap(forged, drop_signature=True),
                    lambda: ks.open_envelope(forged, signer="alice")):  # fmt: skip
        with pytest.raises(SignatureError):
            attempt()
    failures = [e for e in ks.audit.events() if e["action"] == "rewrap"]
    assert [e["outcome"] for e in failures] == ["failure"] * 3  # each refusal is on record


def test_attacker_cannot_hide_a_destroy_without_bringing_back_a_dead_key(
    open_store: StoreFactory, clock: FakeClock, tmp_path: Path
) -> None:
    """Cutting the destroy out of the log is caught; rolling keystore.json back to before it
    as well (the documented gap) brings back a version whose secret is gone: it opens nothing."""
    ks = open_store(checkpoint_every=3)
    ks.generate("alice")
    sealed = ks.seal(small_map(), to=["alice"])
    ks.close()
    before = (ks.directory / "keystore.json").read_bytes()
    cut = len(log_lines(ks.directory))
    checkpoint = (ks.directory / "audit.checkpoint").read_bytes()
    clock.advance(days=1)
    ks.rotate("alice")
    ks.destroy("alice", 1)
    ks.close()
    lines = log_lines(ks.directory)
    (ks.directory / "audit.jsonl").write_bytes(b"".join(lines[:cut]))
    (ks.directory / "audit.checkpoint").write_bytes(checkpoint)
    with pytest.raises(Error):
        reopen(ks.directory)  # keystore.json is newer than the cut log
    (ks.directory / "keystore.json").write_bytes(before)
    rolled = reopen(ks.directory)  # the gap: a consistent older store
    with pytest.raises(KeyNotFound):
        rolled.open_envelope(sealed)  # ... whose destroyed secret stays destroyed


def test_the_gap_a_kept_keystore_json_and_a_cut_log(
    replaced_bob: tuple[Path, bytes, str, str],
) -> None:
    """What still works, and why only an anchor outside the directory can stop it: every line
    up to the event that committed the kept keystore.json is genuine, so cutting the log right
    after it (and pointing audit.checkpoint at a checkpoint before it) makes a consistent older
    store, indistinguishable from the inside. threat-model/keys.md says so."""
    directory, kept, old_key, _ = replaced_bob
    lines = log_lines(directory)
    end = lines.index(old_commit_line(directory, kept)) + 1
    (directory / "keystore.json").write_bytes(kept)
    (directory / "audit.jsonl").write_bytes(b"".join(lines[:end]))
    checkpoints = [x for x in lines[:end] if json.loads(x)["action"] == "checkpoint"]
    if checkpoints:
        (directory / "audit.checkpoint").write_bytes(checkpoints[-1])
    else:
        (directory / "audit.checkpoint").unlink()
    ks = reopen(directory)
    assert ks.recipients.get("bob").public_key == old_key  # the attack works
    assert ks.audit.verify().ok
