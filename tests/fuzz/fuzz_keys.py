"""Fuzz targets for the keys layer: key store metadata, audit log lines, the checkpoint file and
the plaintext of an identity export.

Seeds come from a real store (file backend) built once per process in a temp folder: it
generates, rotates, seals and destroys, with a checkpoint every 3 events, so its audit log has
events, checkpoints and a saved ``audit.checkpoint``.

Byte mutations rarely produce JSON of the wrong *type*, so each JSON parser also has a ``*_typed``
target whose input is a program of edits to a valid document (``confuse``): a field replaced by a
list, a huge, negative or float number, a bool, null, deep nesting, odd unicode, or removed. For
the metadata and the audit lines the edited document is then re-MACed (and re-hashed) with the
seed store's own keys, so the edit reaches every check after the MAC: what no outsider can write,
but the field checks must hold anyway.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import functools
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fuzz_targets import Target, core_samples

from pqselfenc.core import _primitives as P
from pqselfenc.error import Error
from pqselfenc.keys import AuditLog, KeyConfig, KeyStore
from pqselfenc.keys import _metadata as M
from pqselfenc.keys._audit_format import check_line
from pqselfenc.keys._transfer import parse_export
from pqselfenc.keys._vault import passphrase_decrypt

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
    audit_mac_key: bytes
    export: bytes  # the plaintext of an identity export (alice: two versions)


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
    ks.rotate("bob")
    blob = ks.export_identity("bob", PASSPHRASE)
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
        ks._secret.audit_mac_key(),
        passphrase_decrypt(P.EXPORT_MAGIC, P.EXPORT_LABEL, blob, PASSPHRASE),
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


def _verify(log: bytes, checkpoint: bytes, *, remaced: bool = False) -> object:
    """Verify ``log`` with ``checkpoint`` saved beside it, and read its events.

    A report that says ok must mean every line is the original's (a prefix of the log), unless
    the input was ``remaced`` with the store's own key (the typed target).
    """
    seed = seed_store()
    d = _scratch()
    (d / "audit.jsonl").write_bytes(log)
    (d / "audit.checkpoint").write_bytes(checkpoint)
    audit = AuditLog(d, clock=StepClock(), signer=seed.signer, verifier=seed.verifier,  # type: ignore[arg-type]
                     checkpoint_every=3, actor="fuzz", mac_key=seed.audit_mac_key)  # fmt: skip
    report = audit.verify()
    if report.ok and not remaced:  # every line MACed: only the store's lines can verify
        original = [json.loads(x) for x in seed.log.splitlines()]
        lines = [json.loads(x) for x in log.splitlines()]
        assert lines == original[: len(lines)], "verify passed a line the store did not write"
    list(audit.events())  # the unverified reader must also fail only with an Error
    commit = audit.last_commit()  # the binding read at open: likewise
    if report.ok and commit is not None:  # a log that verifies carries only valid generations
        assert type(commit.generation) is int and commit.generation >= 1
    audit.head()
    return report


def _audit_lines(data: bytes) -> object:
    return _verify(data, seed_store().checkpoint)


def _audit_checkpoint(data: bytes) -> object:
    return _verify(seed_store().log, data)


def _identity_export(data: bytes) -> object:
    """The export's plaintext (after the passphrase): parsed strictly, seeds checked."""
    export = parse_export(data, KeyConfig())
    assert export.name and export.versions
    return export


# -- type confusion ------------------------------------------------------------------------------

_DEEP = 1
for _ in range(20):
    _DEEP = [_DEEP]  # type: ignore[assignment]
HOSTILE_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 2, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64, -(2**63),
    10**40, 1.5, -0.0, 1e308, float("inf"), float("nan"), "", "x", "\u00e9\u2603\U0001f600",
    "\x00", "\ud800", "A" * 5000, "-1", "2026-01-01T00:00:00.000000Z", "00" * 32, "zz" * 32,
    [], [1], ["x"], [None], {}, {"a": 1}, {"version": 1}, _DEEP, [[[[[[[[[[[[[[[1]]]]]]]]]]]]]]],
)  # fmt: skip


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside ``node`` (keys and indices), the root excluded."""
    out: list[tuple[Any, ...]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(
        node, list) else ()  # fmt: skip
    for key, child in items:
        out.append((*prefix, key))
        out += _paths(child, (*prefix, key))
    return out


def confuse(doc: Any, program: bytes) -> Any:
    """``doc`` with the edits of ``program``: each 2 bytes pick a path and what happens there
    (a hostile value put in its place, or the field removed)."""
    for i in range(0, len(program) - 1, 2):
        paths = _paths(doc)
        if not paths:
            break
        path = paths[program[i] % len(paths)]
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        choice = program[i + 1] % (len(HOSTILE_VALUES) + 1)
        if choice == len(HOSTILE_VALUES):
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(HOSTILE_VALUES[choice])  # never shared
    return doc


def _dump(obj: Any, **kwargs: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, **kwargs).encode("utf-8", "surrogatepass")


def remac_metadata(doc: Any) -> bytes:
    """``doc`` (a keystore.json document, perhaps edited) with a valid MAC under the seed
    store's key: the edit then reaches the field checks behind the MAC."""
    if isinstance(doc, dict):
        doc = dict(doc)
        doc.pop("mac", None)
        body = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        doc["mac"] = P.metadata_mac(seed_store().mac_key, body.encode()).hex()
    return _dump(doc)


def _metadata_typed(program: bytes) -> object:
    doc = confuse(json.loads(seed_store().metadata), program)
    return M.from_json(remac_metadata(doc), seed_store().mac_key)


def _rechain(lines: list[Any]) -> bytes:
    """Re-hash and re-MAC ``lines`` with the seed store's key where they are objects."""
    prev, out, offset = bytes(32), [], 0
    for line in lines:
        if isinstance(line, dict):
            body = {k: v for k, v in line.items() if k not in ("prev", "hash", "mac")}
            text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
            digest = hashlib.sha3_256(P.AUDIT_CHAIN_LABEL + prev + text.encode()).digest()
            mac = P.audit_mac(seed_store().audit_mac_key, digest, offset).hex()
            line = dict(body, prev=prev.hex(), hash=digest.hex(), mac=mac)
            prev = digest
        out.append(_dump(line, sort_keys=True) + b"\n")
        offset += len(out[-1])
    return b"".join(out)


def _audit_typed(program: bytes) -> object:
    lines = [json.loads(x) for x in seed_store().log.splitlines()]
    if program:
        index = program[0] % len(lines)
        lines[index] = confuse(lines[index], program[1:])
        with contextlib.suppress(Error):
            check_line(lines[index])  # the line parser alone, on the confused line
    return _verify(_rechain(lines), seed_store().checkpoint, remaced=True)


def _export_typed(program: bytes) -> object:
    return _identity_export(_dump(confuse(json.loads(seed_store().export), program)))


_PROGRAMS = [b"", b"\x00", b"\x01\x02\x03"]  # unchanged documents, and a line picked


def keys_targets() -> list[Target]:
    return [
        Target("keystore_metadata", _parse_metadata, lambda: [seed_store().metadata]),
        Target("audit_lines", _audit_lines, lambda: [seed_store().log]),
        Target("audit_checkpoint", _audit_checkpoint, lambda: [seed_store().checkpoint]),
        Target("identity_export", _identity_export, lambda: [seed_store().export]),
        Target("keystore_metadata_typed", _metadata_typed, lambda: _PROGRAMS[:1]),
        Target("audit_lines_typed", _audit_typed, lambda: _PROGRAMS),
        Target("identity_export_typed", _export_typed, lambda: _PROGRAMS[:1]),
    ]
