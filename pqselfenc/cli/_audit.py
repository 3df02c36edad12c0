"""``pqselfenc audit show|verify|export``: the key store's hash-chained, signed audit log.

``verify --json`` prints one result object for monitoring (its fields are listed in docs/cli.md);
``export`` prints the log's lines for a SIEM as JSON Lines (docs/format.md 4.9), each verified
before it is printed: at the first bad line it stops, the lines before it printed, the error on
stderr, exit 1. ``--state FILE`` carries the position from one export to the next.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pqselfenc.cli._keyring import audit_export, audit_report, existing_key_store
from pqselfenc.cli._output import CliError, read_input, write_file
from pqselfenc.cli._session import Session
from pqselfenc.cli._values import count_arg, path_arg
from pqselfenc.core import _primitives as P
from pqselfenc.error import AuditError, InvalidDataError

if TYPE_CHECKING:
    from pqselfenc.keys.audit import AuditReport, ExportState

__all__ = ["add_parsers", "since_arg"]

_COLUMNS = ("seq", "time", "actor", "action", "outcome", "name", "version", "key_id")
_SEQ = re.compile(r"[0-9]{1,19}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_BROKEN_HINT = "keep a copy of the log and investigate; the keys themselves are unaffected"


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    audit = sub.add_parser("audit", help="show, verify or export the key store's audit log",
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
    _export_parser(actions, common)


def _export_parser(actions: Any, common: argparse.ArgumentParser) -> None:
    export = actions.add_parser(
        "export", parents=[common], help="print the verified events as JSON Lines (for a SIEM)",
        description="Print each event of the audit log as one JSON record (docs/format.md 4.9), "
        "after it and every line before it verified. At the first bad line the export stops: "
        "the lines before it are printed, the error goes to stderr, exit status 1.",
    )  # fmt: skip
    where = export.add_mutually_exclusive_group()
    where.add_argument(
        "--since", type=since_arg, metavar="SEQ|TIME",
        help="only the events after seq SEQ, or from the first event at or after TIME "
        "(ISO 8601 with a zone, e.g. 2026-03-01T12:00:00Z; a bare date is UTC midnight)",
    )  # fmt: skip
    where.add_argument(
        "--state", type=path_arg, metavar="FILE",
        help="continue after the event FILE records (its line must be unchanged), then record "
        "the last event exported in FILE (created if missing)",
    )  # fmt: skip
    export.add_argument("--format", choices=("jsonl",), default="jsonl",
                        help="JSON Lines, one record per event (the only format)")  # fmt: skip
    export.set_defaults(func=export_log)


def since_arg(text: str) -> int | datetime:
    """``--since``: a seq (ASCII digits), or an ISO 8601 time with its zone, or a date (UTC)."""
    if _SEQ.fullmatch(text):
        if int(text) > P.MAX_COUNTER:
            raise argparse.ArgumentTypeError(f"seq {text} is beyond any audit log")
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a seq or an ISO 8601 time: {text!r}") from None
    if _DATE.fullmatch(text):
        return when.replace(tzinfo=UTC)
    if when.utcoffset() is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (add Z or +HH:MM)")
    return when


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


def report_doc(report: AuditReport) -> dict[str, Any]:
    """The ``audit verify --json`` object; docs/cli.md lists its fields (they are stable)."""
    return {"ok": report.ok, "events": report.events, "last_seq": report.last_seq,
            "last_hash": report.last_hash, "checkpoint_seq": report.checkpoint_seq,
            "problem": report.kind, "seq": report.seq, "line": report.line,
            "detail": report.detail}  # fmt: skip


def verify_log(session: Session) -> int:
    report = audit_report(session)  # read only: a damaged log is reported, never refused
    session.console.result(report_doc(report), [str(report)] if report.ok else [])
    if not report.ok:
        raise CliError(str(report), hint=_BROKEN_HINT)
    return 0


# -- export ------------------------------------------------------------------------------------


def _read_state(path: Path) -> ExportState | None:
    """The state ``--state`` names, None if the file does not exist yet."""
    from pqselfenc.keys.audit import ExportState

    if not os.path.lexists(path):
        return None
    try:
        return ExportState.parse(read_input(path, "state file", limit=4096))
    except InvalidDataError as exc:
        raise CliError(f"{path}: {exc}", hint="give the file an earlier 'audit export --state' "
                       "wrote, or move it aside to export from the start") from exc  # fmt: skip


def _sync(stream: IO[bytes]) -> None:
    """Make what went to stdout durable when it is a file, before the state says it was
    delivered: a flush or fsync that fails is a ``CliError`` (the state is then not written),
    never ignored. A pipe or a terminal has nothing to sync."""
    try:
        stream.flush()
        try:
            fd = stream.fileno()
        except (OSError, ValueError):  # not a real file (a test's buffer): nothing to sync
            return
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fsync(fd)
    except OSError as exc:
        raise CliError(
            f"the exported events may not have reached stdout durably ({exc.strerror or exc}):"
            " the state file is left as it was, so the next export repeats them",
            hint="check the disk or file system stdout is written to",
        ) from exc


def export_log(session: Session) -> int:
    args = session.args
    since = _read_state(args.state) if args.state is not None else args.since
    out = session.console.data_stdout("the audit export", binary=False)
    try:
        export = audit_export(session, since)
    except ValueError as exc:  # a state of another store
        hint = "each key store needs its own state file"
        raise CliError(f"{args.state}: {exc}", hint=hint) from exc
    count, failure = 0, None
    try:
        for record in export:
            out.write(record.to_json() + b"\n")
            count += 1
    except AuditError as exc:
        failure = exc
    _sync(out)
    if args.state is not None and count and export.state is not None:
        write_file(args.state, export.state.to_json(), mode=0o600, force=True)
    last = export.state.seq if export.state is not None else None
    session.console.note(f"exported {count} events" + (f", up to seq {last}" if count else ""))
    session.console.result({"exported": count, "last_seq": last, "ok": failure is None})
    if failure is not None:
        raise CliError(str(failure), hint=_BROKEN_HINT + " (the lines before it were exported)")
    return 0
