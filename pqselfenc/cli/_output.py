"""What the command prints and writes: one-line errors and hints, JSON results, progress bars,
terminal checks, and files that appear whole or not at all.

Every message goes to stderr; stdout carries only results (text or ``--json``) or, when asked
with ``--out -``, plaintext, and never binary to a terminal.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, TextIO

from pqselfenc.core import _durable
from pqselfenc.core import _primitives as P

PROG = "pqselfenc"
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70  # EX_SOFTWARE (sysexits.h): a bug, not the user's fault
EXIT_INTERRUPTED = 130

TEMP_PREFIX = ".pqselfenc-tmp-"  # every output's temp file, for one sweep of leftovers
# The files this command has published so far (``recording_outputs``), for an interrupt's report.
_WRITTEN: ContextVar[list[Path | ClusterOutput] | None] = ContextVar("pqselfenc_written",
                                                                   default=None)  # fmt: skip


class ClusterOutput(str):
    """An output a cluster publishes (``--scheduler``): its rename runs on a worker, so an
    interrupt here cannot tell whether it happened."""

    __slots__ = ()


class CliError(Exception):
    """A failure the command reports as ``pqselfenc: error: MESSAGE`` (+ optional hint)."""

    def __init__(self, message: str, hint: str | None = None, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code


class Progress(Protocol):
    """The part of a progress bar the commands use."""

    def update(self, n: int) -> object: ...


class _NoProgress:
    def update(self, n: int) -> None:
        return None


@dataclass
class Console:
    """Where output goes, and how: ``json`` results, ``quiet`` (no progress, no notes)."""

    json: bool = False
    quiet: bool = False
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    stdout_is_data: bool = False  # set by data_stdout(): results then go to stderr

    # -- messages (stderr) -------------------------------------------------------------------

    def note(self, message: str) -> None:
        """An informational line (which backend, where a file went); silenced by --quiet."""
        if not self.quiet:
            print(f"{PROG}: {message}", file=self.stderr)

    def warn(self, message: str) -> None:
        """A warning line; always printed (warnings are about secrets and lost data)."""
        print(f"{PROG}: warning: {message}", file=self.stderr)

    def error(self, message: str, hint: str | None = None) -> None:
        print(f"{PROG}: error: {one_line(message)}", file=self.stderr)
        if hint:
            print(f"{PROG}: hint: {one_line(hint)}", file=self.stderr)

    # -- results (stdout) --------------------------------------------------------------------

    def result(self, doc: dict[str, Any], lines: Iterable[str] = ()) -> None:
        """A command's result: ``doc`` as one JSON object with --json, else ``lines``; on
        stdout, or on stderr when stdout carries data (a result never joins the data)."""
        stream = self.stderr if self.stdout_is_data else self.stdout
        if self.json:
            print(json.dumps(doc, sort_keys=True), file=stream)
            return
        for line in lines:
            print(line, file=stream)

    def data_stdout(self, what: str, *, binary: bool = True) -> IO[bytes]:
        """stdout as the stream for ``what`` (``--out -``): refused on a terminal when
        ``binary``; from now on results go to stderr."""
        if binary:
            refuse_binary_to_terminal(self.stdout, what)
        self.stdout_is_data = True
        return self.stdout.buffer

    # -- progress ----------------------------------------------------------------------------

    @property
    def interactive(self) -> bool:
        """Progress bars only for a person watching: stdout and stderr are terminals."""
        return not (self.quiet or self.json) and is_tty(self.stdout) and is_tty(self.stderr)

    @contextlib.contextmanager
    def progress(self, total: int, description: str) -> Iterator[Progress]:
        """A byte-counting bar on stderr, or a silent counter when nobody is watching."""
        if not self.interactive:
            yield _NoProgress()
            return
        from tqdm import tqdm  # only with a person watching: a script never pays for it

        bar = tqdm(
            total=total,
            desc=description,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=self.stderr,
            leave=False,
            dynamic_ncols=True,
        )
        try:
            yield bar
        finally:
            bar.close()


def one_line(text: str) -> str:
    """Messages are one line each, whatever the exception text held."""
    return " ".join(text.split())


def is_tty(stream: IO[Any] | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):  # closed or detached stream
        return False


def refuse_binary_to_terminal(stream: IO[Any] | None, what: str) -> None:
    if is_tty(stream):
        raise CliError(
            f"refusing to write {what} to a terminal",
            hint="use --out FILE, or redirect the output to a file or a pipe",
        )


# -- files -------------------------------------------------------------------------------------


def default_file_mode() -> int:
    """``0o666`` minus the process umask: what ``open(path, "w")`` would have used."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _exists_error(path: Path) -> CliError:
    return CliError(f"{path} already exists", hint="use --force to overwrite it")


def _special_error(path: Path, exc: OSError) -> CliError:
    return CliError(
        f"{path} {exc.strerror}",
        hint="pqselfenc replaces only regular files; to write into a pipe or a device, "
        "use --out - and redirect",
    )


def check_writable(path: Path, force: bool) -> None:
    """Fail before any work if ``path`` exists (without --force), is a FIFO, device, socket or
    folder (never replaced, even with --force), or cannot be created."""
    if path.is_dir():
        raise CliError(f"{path} is a directory", hint="give a file name to --out")
    try:
        existing = _durable.check_replaceable(path)
    except _durable.UnsafeFileError as exc:
        raise _special_error(path, exc) from exc
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from exc
    if existing is not None and not force:
        raise _exists_error(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise CliError(f"cannot write {path}: folder {folder} does not exist")


@contextlib.contextmanager
def atomic_file(path: Path, *, mode: int, force: bool) -> Iterator[IO[bytes]]:
    """A temp file next to ``path`` that becomes ``path`` only if the block succeeds.

    It is created with mode 0600 (so a secret is never readable by others, not even while
    being written), set to ``mode`` (or, replacing a file, the stricter of ``mode`` and that
    file's mode), fsynced, renamed, and the folder fsynced (``core/_durable.py``). On any
    failure it is removed and ``path`` is untouched. Without ``force`` an existing ``path`` is
    never replaced; a FIFO, device or socket never is (checked again just before the rename).
    """
    try:
        with _durable.output_file(path, mode=mode, replace=force, prefix=TEMP_PREFIX,
                                  on_publish=lambda: note_written(path)) as handle:  # fmt: skip
            yield handle
    except FileExistsError:
        raise _exists_error(path) from None
    except _durable.UnsafeFileError as exc:
        raise _special_error(path, exc) from exc


@contextlib.contextmanager
def recording_outputs() -> Iterator[list[Path | ClusterOutput]]:
    """The files ``atomic_file`` publishes within the block, each listed as its name appears
    (with SIGINT and SIGTERM held, so an interrupt never falls between the two)."""
    written: list[Path | ClusterOutput] = []
    token = _WRITTEN.set(written)
    try:
        yield written
    finally:
        _WRITTEN.reset(token)


def note_written(path: Path) -> None:
    """Record that ``path`` now holds this command's output (``recording_outputs``). Call it
    with SIGINT and SIGTERM held over the rename (``_durable.held_signals``), as
    ``atomic_file`` does."""
    written = _WRITTEN.get()
    if written is not None:
        written.append(path)


def note_cluster_output(destination: str) -> None:
    """Record that a cluster is about to publish ``destination`` for this command: from now
    on an interrupt can no longer say it was not written."""
    written = _WRITTEN.get()
    if written is not None:
        written.append(ClusterOutput(destination))


def interrupted_report(what: str, written: list[Path | ClusterOutput]) -> str:
    """What an interrupted command says: which of its files were written, if any, and which
    a cluster may still publish (atomically: whole, or not at all)."""
    remote = [str(w) for w in written if isinstance(w, ClusterOutput)]
    if remote:
        return (f"{what}; the cluster may still publish {remote[0]} (whole if it does: the "
                "rename is atomic, never a partial file)")  # fmt: skip
    if not written:
        return f"{what}; nothing was written under the output name"
    names = ", ".join(str(p) for p in written[:3])
    more = f" and {len(written) - 3} more" if len(written) > 3 else ""
    return f"{what} after writing {names}{more}; nothing else was written under an output name"


def write_file(path: Path, data: bytes, *, mode: int, force: bool) -> None:
    with atomic_file(path, mode=mode, force=force) as handle:
        handle.write(data)


def read_input(
    path: Path, what: str, *, limit: int = P.MAX_MAP_FILE_SIZE, too_large: str | None = None
) -> bytes:
    """A file's bytes, with a one-line error naming ``what`` it was meant to be. Only a regular
    file of at most ``limit`` bytes is read (a FIFO or a device is refused, not waited on); a
    larger one is refused unread, with the message ``too_large`` if given."""
    with _input_errors(path, what):
        try:
            return _durable.read_file(path, limit=limit, follow=True)
        except _durable.FileTooLargeError as exc:
            if too_large is None:
                raise
            raise CliError(too_large) from exc


def read_head(path: Path, what: str, size: int) -> bytes:
    """The first ``size`` bytes of the regular file ``path`` (all of a shorter one), with the
    errors of ``read_input``."""
    with _input_errors(path, what), _durable.open_file(path, follow=True) as handle:
        return handle.read(size)


@contextlib.contextmanager
def _input_errors(path: Path, what: str) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        raise CliError(f"{what} {path} does not exist") from None
    except (_durable.UnsafeFileError, _durable.FileTooLargeError) as exc:
        raise CliError(f"{what} {path} {exc.strerror}") from exc
    except OSError as exc:
        raise CliError(f"cannot read {what} {path}: {exc.strerror}") from exc
