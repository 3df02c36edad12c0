"""Fuzz targets for the keys layer: key store metadata, audit log lines and the checkpoint file.

Seeds come from a real store (file backend) built once per process in a temp folder: it
generates, rotates, seals and destroys, with a checkpoint every 3 events, so its audit log has
events, checkpoints and a saved ``audit.checkpoint``.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fuzz_targets import Target, core_samples

from pqselfenc.keys import AuditLog, KeyConfig, KeyStore
from pqselfenc.keys import _metadata as M

PASSPHRASE = "gravel orbit candle mosaic tundra"


class StepClock:
    """Deterministic clock: one second per call."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@dataclass(frozen=True)
class SeedStore:
    directory: Path
    log: bytes
    checkpoint: bytes
    metadata: bytes
    verifier: object
    signer: object
    mac_key: bytes


@functools.cache
def seed_store() -> SeedStore:
    root = Path(tempfile.mkdtemp(prefix="pqselfenc-fuzz-keys-"))
    atexit.register(shutil.rmtree, root, True)
    config = KeyConfig(checkpoint_every=3)
    ks = KeyStore.open(root / "ks", config=config, passphrase=PASSPHRASE, clock=StepClock())
    ks.generate("alice")
    ks.generate("bob")
    sealed = ks.seal(core_samples()[1][0], ["alice", "bob"], sign_as="alice")
    ks.rotate("alice")
    ks.open_envelope(sealed)
    ks.destroy("alice", 1)
    ks.close()
    d = ks.directory
    report = ks.audit.verify()
    assert report.ok, report
    return SeedStore(
        d,
        (d / "audit.jsonl").read_bytes(),
        (d / "audit.checkpoint").read_bytes(),
        (d / "keystore.json").read_bytes(),
        ks._secret.audit_key.verifying_key(),
        ks._secret.audit_key,
        ks._secret.metadata_mac_key(),
    )


def _parse_metadata(data: bytes) -> object:
    """Unauthenticated parse (as before unlock), round trip, then the MAC check: under the seed
    store's key only a document with the seed's content may pass it."""
    meta = M.from_json(data, None)
    key = seed_store().mac_key
    assert M.from_json(M.to_json(meta, key), key) == meta
    seed = seed_store().metadata
    authenticated = M.from_json(data, key)  # IntegrityError for any change of content
    assert authenticated == M.from_json(seed, None), "the MAC passed altered metadata"
    return authenticated


@functools.cache
def _scratch() -> Path:
    path = Path(tempfile.mkdtemp(prefix="pqselfenc-fuzz-audit-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def _verify(log: bytes, checkpoint: bytes) -> object:
    """Verify ``log`` with ``checkpoint`` saved beside it, and read its events.

    A report that says ok must mean every line up to the saved checkpoint is the original's.
    """
    seed = seed_store()
    d = _scratch()
    (d / "audit.jsonl").write_bytes(log)
    (d / "audit.checkpoint").write_bytes(checkpoint)
    audit = AuditLog(d, clock=StepClock(), signer=seed.signer, verifier=seed.verifier,  # type: ignore[arg-type]
                     checkpoint_every=3, actor="fuzz")  # fmt: skip
    report = audit.verify()
    if report.ok and checkpoint == seed.checkpoint:
        end = seed.log.index(checkpoint.rstrip(b"\n")) + len(checkpoint)
        assert log[:end] == seed.log[:end], "verify passed a log altered before its checkpoint"
    list(audit.events())  # the unverified reader must also fail only with an Error
    generation = audit.last_generation()  # the rollback bound read at open: likewise
    if report.ok:  # a log that verifies carries only valid generations
        assert generation is None or (type(generation) is int and generation >= 1)
    return report


def _audit_lines(data: bytes) -> object:
    return _verify(data, seed_store().checkpoint)


def _audit_checkpoint(data: bytes) -> object:
    return _verify(seed_store().log, data)


def keys_targets() -> list[Target]:
    return [
        Target("keystore_metadata", _parse_metadata, lambda: [seed_store().metadata]),
        Target("audit_lines", _audit_lines, lambda: [seed_store().log]),
        Target("audit_checkpoint", _audit_checkpoint, lambda: [seed_store().checkpoint]),
    ]
