"""The ``pqselfenc`` command: a thin layer over the library.

``main(argv)`` parses, runs one command and returns its exit status; it never raises and never
prints a traceback (set ``PQSELFENC_DEBUG=1`` to get one for an internal error). Errors are one
``pqselfenc: error: ...`` line, optionally followed by one ``pqselfenc: hint: ...`` line, on
stderr. Exit status: 0 success, 1 error, 2 usage, 70 internal error (a bug), 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM).

SIGTERM is raised as ``Terminated``, a ``KeyboardInterrupt``, so it unwinds like Ctrl-C: every
``finally`` runs and temp files are removed, and no cleanup waits for a worker blocked in I/O
(``core._pipeline.interrupting``). Run as the command (``argv`` not given), an interrupted
command then exits at once, without joining such workers; a second signal exits immediately.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from pqselfenc import __version__

if TYPE_CHECKING:  # the command modules load the engine: only a command that runs needs them
    from pathlib import Path

    from pqselfenc.cli._output import Console
    from pqselfenc.cli._session import Session

__all__ = ["main"]

DEBUG_ENV = "PQSELFENC_DEBUG"
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process SIGTERM ended


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so the same cleanup runs."""


class _UsageError(Exception):
    def __init__(self, message: str, command: str) -> None:
        super().__init__(message)
        self.message, self.command = message, command


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one error line and a hint, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(message, self.prog)


def _common() -> argparse.ArgumentParser:
    """Options every command takes (after the command name)."""
    common = _Parser(add_help=False)
    out = common.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print results as one JSON object")
    out.add_argument("-q", "--quiet", action="store_true", help="no progress bars or notes")
    keys = common.add_argument_group("key store")
    keys.add_argument(
        "--home",
        metavar="DIR",
        help="pqselfenc home (default: $PQSELFENC_HOME, else "
        "$XDG_DATA_HOME/pqselfenc, else ~/.local/share/pqselfenc)",
    )
    keys.add_argument(
        "--backend",
        choices=("auto", "keyring", "file", "pkcs11"),
        default="auto",
        help="where secret keys live (default auto: the OS keyring when a "
        "secure one is usable, else the passphrase-protected file; pkcs11: wrapped by a "
        "key in a PKCS#11 token, $PQSELFENC_PKCS11_MODULE and $PQSELFENC_PKCS11_TOKEN)",
    )
    keys.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="read the file backend's passphrase from FILE (else "
        "$PQSELFENC_PASSPHRASE, else a prompt)",
    )
    keys.add_argument(
        "--pin-file",
        metavar="FILE",
        help="read the PKCS#11 token's user PIN from the first line of FILE (mode 0600, "
        "yours; else $PQSELFENC_PKCS11_PIN, else a prompt)",
    )
    return common


# The module that adds each command's parsers. A run builds only its own command's (argparse's
# gettext lookups make building all of them cost more than parsing a small decrypt); a first
# word that is not listed here builds them all, so help and usage errors name every command.
_OWNERS = {
    "encrypt": "_encrypt", "decrypt": "_encrypt",
    "keys": "_keys", "recipients": "_keys", "rewrap": "_keys",
    "store": "_store", "audit": "_audit",
}  # fmt: skip


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or, if ``command`` is a command name, of only that one."""
    from pqselfenc.cli._output import PROG

    owner = _OWNERS.get(command or "")
    parser = _Parser(
        prog=PROG,
        description="Post-quantum hardened self-encryption: encrypt files into a chunk store, "
        "seal their DataMaps for named recipients with ML-KEM, manage the keys.",
        epilog="Run 'pqselfenc COMMAND --help' for a command's options. Guide: docs/cli.md",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    common = _common()
    for name in dict.fromkeys(_OWNERS.values()) if owner is None else [owner]:
        importlib.import_module(f"pqselfenc.cli.{name}").add_parsers(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["--version"]:  # as argparse would answer, before the engine loads
        print(f"pqselfenc {__version__}")
        return 0
    from pqselfenc.cli._output import EXIT_INTERRUPTED, EXIT_USAGE, PROG, Console
    from pqselfenc.cli._session import Session

    console = Console()
    parser = build_parser(words[0] if words else None)
    try:
        args = parser.parse_args(words)
    except _UsageError as exc:
        command = exc.command if exc.command != PROG else _command_of(parser, words)
        console.error(exc.message, f"see '{command} --help'")
        return EXIT_USAGE
    except SystemExit as exc:  # --help and --version exit 0 through argparse
        return exc.code if isinstance(exc.code, int) else 0
    console.json, console.quiet = args.json, args.quiet
    func: Callable[[Session], int] = args.func
    with _signals():
        code = _run(func, Session(args, console), console)
    if argv is None and code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        _exit_now(code)  # the command itself: do not wait for workers stuck in I/O
    return code


@contextlib.contextmanager
def _signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise (``KeyboardInterrupt``, ``Terminated``) the first time and
    exit at once the second time, while a command runs (main thread only)."""
    from pqselfenc.cli._output import EXIT_INTERRUPTED

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    seen: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        code = EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED
        if seen:
            _exit_now(code)
        seen.append(signum)
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for signum, handler in old.items():
        if handler is not signal.SIG_IGN:  # a job started with SIGINT ignored keeps it so
            signal.signal(signum, on_signal)
    try:
        yield
    finally:
        for signum, handler in old.items():  # None: set outside Python, i.e. the default
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def _exit_now(code: int) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _command_of(parser: argparse.ArgumentParser, words: list[str]) -> str:
    """``pqselfenc store gc`` from the leading command words of ``words`` (for help hints)."""
    from pqselfenc.cli._output import PROG

    command = [PROG]
    for word in words:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or word not in sub.choices:
            break
        command.append(word)
        parser = sub.choices[word]
    return " ".join(command)


def _call(func: Callable[[Session], int], session: Session) -> int:
    """Run the command, then close what it opened; a failure while closing after a failure
    must not hide the first one."""
    try:
        code = func(session)
    except BaseException:
        with contextlib.suppress(Exception):
            session.close()
        raise
    session.close()
    return code


def _run(func: Callable[[Session], int], session: Session, console: Console) -> int:
    from pqselfenc.cli._errors import describe
    from pqselfenc.cli._output import (
        EXIT_INTERNAL,
        EXIT_INTERRUPTED,
        CliError,
        ClusterOutput,
        interrupted_report,
        recording_outputs,
    )
    from pqselfenc.error import Error

    written: list[Path | ClusterOutput] = []
    try:
        with recording_outputs() as written:
            return _call(func, session)
    except CliError as exc:
        console.error(exc.message, exc.hint)
        return exc.code
    except (Error, OSError) as exc:
        message, hint = describe(exc)
        console.error(message, hint)
        return 1
    except KeyboardInterrupt as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        console.error(interrupted_report(what, written))
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    except Exception as exc:
        if os.environ.get(DEBUG_ENV):
            import traceback

            traceback.print_exc(file=sys.stderr)
        console.error(
            f"internal error ({type(exc).__name__}); this is a bug in pqselfenc",
            f"set {DEBUG_ENV}=1 to print the traceback, and please report it",
        )
        return EXIT_INTERNAL
