"""``pqselfenc audit show|verify``: the key store's hash-chained, signed audit log."""

from __future__ import annotations

import argparse
from collections import deque
from typing import Any

from pqselfenc.cli._keyring import audit_report, existing_key_store
from pqselfenc.cli._output import CliError
from pqselfenc.cli._session import Session
from pqselfenc.cli._values import count_arg
from pqselfenc.error import AuditError

__all__ = ["add_parsers"]

_COLUMNS = ("seq", "time", "actor", "action", "outcome", "name", "version", "key_id")


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    audit = sub.add_parser("audit", help="show or verify the key store's audit log",
                           description="Every key operation is appended to a hash-chained log "
                           "with ML-DSA-signed checkpoints.")  # fmt: skip
    actions = audit.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("show", parents=[common], help="print the events")
    show.add_argument("--last", type=count_arg, metavar="N", help="only the last N events")
    show.set_defaults(func=show_log)
    verify = actions.add_parser(
        "verify", parents=[common],
        help="check every line (MAC, link), every signature, truncation and keystore.json",
    )  # fmt: skip
    verify.set_defaults(func=verify_log)


def _events(session: Session, last: int | None) -> list[dict[str, Any]]:
    if last is not None and last < 0:
        raise CliError("--last must be 0 or more", code=2)
    from pqselfenc.keys.audit import read_events

    path, _ = existing_key_store(session)
    events = read_events(path)  # the log is not secret: no unlocking, nothing written
    try:
        return list(deque(events, maxlen=last))
    except AuditError as exc:  # a line that does not parse: verify says more
        raise CliError(str(exc), hint="run 'pqselfenc audit verify' to find out why") from exc


def _line(event: dict[str, Any]) -> str:
    cells = [str(event.get(c)) for c in _COLUMNS if event.get(c) is not None]
    key_id = event.get("key_id")
    if isinstance(key_id, str) and len(key_id) > 16:
        cells[-1] = key_id[:16] + "…"
    return " ".join(cells)


def show_log(session: Session) -> int:
    events = _events(session, session.args.last)
    session.console.result({"events": events}, [_line(e) for e in events] or ["no events"])
    return 0


def verify_log(session: Session) -> int:
    report = audit_report(session)  # read only: a damaged log is reported, never refused
    doc = {"ok": report.ok, "events": report.events, "last_seq": report.last_seq,
           "checkpoint_seq": report.checkpoint_seq, "problem": report.kind,
           "line": report.line, "detail": report.detail}  # fmt: skip
    session.console.result(doc, [str(report)] if report.ok else [])
    if not report.ok:
        raise CliError(str(report), hint="keep a copy of the log and investigate; the keys "
                       "themselves are unaffected")  # fmt: skip
    return 0
