"""Crypto-shredding a key version: intent first, then the outcome, each recorded.

``destroy`` commits the version as ``destroy-pending`` (audit event ``destroy``, outcome
``intent``: from then on nothing uses it), then asks the backend to delete its secret and records
what happened: success commits ``destroyed`` (event ``destroy``, ``success``); a failure (a keyring
that refuses deletes, a token that is away) is recorded as ``destroy``, ``failure`` with the
backend's error class, the version stays ``destroy-pending`` and the error is raised. The log
never says "destroyed" while the secret is still there.

``finish_destroys`` runs when a store opens: each pending delete is retried (each attempt
audited); one that fails again is recorded and left pending, so one stubborn secret never stops
the store from opening. A ``destroyed`` version is deleted once more (a link or file planted under
its name, a store of the release before whose delete failed); if its secret turns out to be
there and cannot be deleted, the version is marked ``destroy-pending`` again: the truth.
"""

from __future__ import annotations

from dataclasses import replace

from pqselfenc.error import Error
from pqselfenc.keys._ledger import Ledger
from pqselfenc.keys._metadata import KeyState, KeyVersion, Metadata
from pqselfenc.keys._secrets import Secrets

__all__ = ["destroy", "finish_destroys"]


def destroy(ledger: Ledger, secrets: Secrets, name: str, version: int) -> KeyVersion:
    """Mark ``name`` v``version`` destroy-pending (audited intent), delete its secret, record the
    outcome; returns the version as it now is. The backend's error is raised (and recorded) if
    the delete fails: the version stays destroy-pending and a later call (or open) retries."""
    with ledger.locked() as meta:
        old = meta.identity(name).version(version)
        secrets.forget(name, version)
        if old.state is KeyState.DESTROYED:
            if secrets.delete(name, version):  # a secret was left there: say so
                ledger.record("destroy", name, old, detail="deleted a secret left behind")
            return old
        if old.state is not KeyState.DESTROY_PENDING:
            now = ledger.clock()
            pending = replace(old, state=KeyState.DESTROY_PENDING, destroyed=now,
                              retired=old.retired or now)  # fmt: skip
            meta = _commit(ledger, meta, name, pending, outcome="intent")
            old = pending
        return _delete(ledger, secrets, meta, name, old, raising=True)


def finish_destroys(ledger: Ledger, secrets: Secrets) -> Metadata:
    """At open (lock held): retry every pending delete, re-delete every destroyed version's
    secret; failures are recorded and left pending, never raised. The metadata afterwards."""
    with ledger.locked() as meta:
        for ident in list(meta.identities.values()):
            for version in ident.versions:
                if version.state is KeyState.DESTROY_PENDING:
                    _delete(ledger, secrets, meta, ident.name, version, raising=False)
                elif version.state is KeyState.DESTROYED:
                    _delete_again(ledger, secrets, ident.name, version)
                meta = ledger.read()
        return meta


def _delete(ledger: Ledger, secrets: Secrets, meta: Metadata, name: str, pending: KeyVersion,
            *, raising: bool) -> KeyVersion:  # fmt: skip
    try:
        secrets.delete(name, pending.version)
    except Error as exc:
        ledger.record_failure("destroy", exc, name, pending)
        if raising:
            raise
        return pending
    done = replace(pending, state=KeyState.DESTROYED)
    _commit(ledger, meta, name, done, detail="secret deleted")
    return done


def _delete_again(ledger: Ledger, secrets: Secrets, name: str, version: KeyVersion) -> None:
    try:
        if secrets.delete(name, version.version):
            ledger.record("destroy", name, version, detail="deleted a secret left behind")
    except Error as exc:
        with ledger.locked() as meta:  # its secret is there and stays: it is only pending
            pending = replace(version, state=KeyState.DESTROY_PENDING)
            _commit(ledger, meta, name, pending, outcome="failure", detail=type(exc).__name__)


def _commit(ledger: Ledger, meta: Metadata, name: str, version: KeyVersion,
            **fields: str) -> Metadata:  # fmt: skip
    ident = meta.identity(name).with_version(version)
    return ledger.commit(meta.with_identity(ident), "destroy", name, version, **fields)
