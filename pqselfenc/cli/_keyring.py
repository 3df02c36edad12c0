"""The key store as the commands open it: which backend, which passphrase or PIN, and the calls
that seal, open and name keys for the other commands.

The store lives in ``HOME/keys``. A new store goes into the OS keyring when a secure one is
usable, else (saying so in one warning line) into the passphrase-protected file backend, or,
with ``--backend pkcs11``, behind a key in a PKCS#11 token; an existing store always reopens
with the backend it was created with. That choice is the library's (``pqselfenc.keys.defaults``,
shared with ``KeyStore(config)``); the command adds ``--backend``, ``--passphrase-file``,
``--pin-file`` and the prompts (a wrong PIN typed at the prompt is asked once more). A new store
says which rollback protection it has: a warning line for the file backend (none), and for a
token also what the token can do (``capabilities().statement()``).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pqselfenc.cli._output import CliError, is_tty
from pqselfenc.cli._session import Session
from pqselfenc.core.config import EncryptionConfig
from pqselfenc.core.datamap import DataMap
from pqselfenc.error import InvalidDataError, KeyNotFound, TokenPinError

if TYPE_CHECKING:  # the keys layer (KEM, argon2, zxcvbn, keyring) loads only when a command
    from pqselfenc.keys import KeyStore  # touches keys: encrypt without --to starts faster
    from pqselfenc.keys.audit import AuditExport, AuditReport

__all__ = [
    "audit_export",
    "check_recipients",
    "convergence_secret",
    "key_store",
    "key_store_path",
    "name_arg",
    "open_sealed",
    "read_secret",
    "seal_map",
    "secret_config",
]

# The names pqselfenc.keys.defaults and pqselfenc.keys.pkcs11_backend define (a test pins them),
# spelled here so that building the parser does not load the keys layer.
PASSPHRASE_ENV = "PQSELFENC_PASSPHRASE"  # noqa: S105 (the name of a variable, not a value)
PIN_ENV = "PQSELFENC_PKCS11_PIN"
MODULE_ENV = "PQSELFENC_PKCS11_MODULE"
TOKEN_ENV = "PQSELFENC_PKCS11_TOKEN"  # noqa: S105 (a variable name)
BACKEND_LABELS = {"keyring": "OS keyring", "file": "passphrase-protected file",
                  "pkcs11": "PKCS#11 token"}  # fmt: skip
_MAX_PASSPHRASE_FILE = 64 << 10
_MAX_PIN_FILE = 4 << 10


def name_arg(text: str) -> str:
    """An identity or recipient name, checked as the key store checks it (usage error if not)."""
    from pqselfenc.keys.config import check_name

    try:
        return check_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid name {text!r}: {exc}") from exc


NO_ANCHOR = ("new key store: nothing outside its folder records its latest state, so a rollback "
             "of the whole folder is not detected (file backend: no rollback anchor); keep a "
             "copy of audit.checkpoint elsewhere (threat-model/keys.md)")


def key_store_path(session: Session) -> Path:
    return session.home / "keys"  # pqselfenc.keys.defaults.key_store_path, without loading keys


def key_store(session: Session, *, create: bool = False, reset_anchor: bool = False) -> KeyStore:
    """The key store of ``--home``, opened once per command (closed by ``main``).

    Only commands that add keys (``create``) make a new store; the others say there is none.
    ``reset_anchor``: accept the folder over its rollback anchor (``keys anchor --reset``).
    """
    from pqselfenc.keys import KeyStore

    opened = session.opened("keys")
    if opened is not None:
        assert isinstance(opened, KeyStore)
        return opened
    path = key_store_path(session)
    existing = _existing_backend(path)
    if not create and existing is None:
        existing_key_store(session)  # raises: there is none
    kind = _choose_backend(session, path, existing)
    store = _open(session, path, kind, creating=existing is None, reset_anchor=reset_anchor)
    session.console.note(f"key store {path} ({BACKEND_LABELS[kind]})")
    if existing is None:
        _say_protection(session, store)
    session.keep("keys", store, lambda: _close(session, store))
    return store


def _say_protection(session: Session, store: KeyStore) -> None:
    """At creation: what the token can do, and which rollback protection the store has (a
    warning when there is none)."""
    capabilities = store.token_capabilities()
    if capabilities is not None:
        session.console.note(capabilities)
    if store.backend == "file":
        session.console.warn(NO_ANCHOR)
    else:
        session.console.note(store.rollback_protection())


def _close(session: Session, store: KeyStore) -> None:
    """Close the store; say so if its rollback anchor could not be brought up to date."""
    try:
        store.close()
    finally:
        if store.anchor_problem is not None:
            session.console.warn(store.anchor_problem)


def _existing_backend(path: Path) -> str | None:
    """The backend of the store at ``path``, or None when there is none yet."""
    from pqselfenc.keys.defaults import existing_backend

    return existing_backend(path)


def _choose_backend(session: Session, path: Path, existing: str | None) -> str:
    """The library's choice (``pqselfenc.keys.defaults``), with ``--backend`` on top."""
    from pqselfenc.keys.defaults import choose_backend

    wanted = session.option("backend") or "auto"
    if existing is not None and wanted not in ("auto", existing):
        raise CliError(
            f"the key store in {path} keeps its keys in the {BACKEND_LABELS[existing]}",
            hint=f"drop --backend, or use --backend {existing}",
        )
    choice = choose_backend(path, wanted)
    if choice.fallback is not None:
        session.console.warn(
            f"no secure OS keyring ({choice.fallback}); keeping keys in the passphrase-protected "
            f"file backend in {path}"
        )
    return choice.kind


def _unlock(session: Session, path: Path, kind: str, *, creating: bool) -> dict[str, Any]:
    """What unlocks the store at ``path``: its backend, and the passphrase, keyring or PIN."""
    unlock: dict[str, Any] = {"backend": kind}
    if kind == "file":
        unlock["passphrase"] = read_secret(session, "passphrase_file", PASSPHRASE_ENV,
                                           f"passphrase for {path}", confirm=creating)  # fmt: skip
    elif kind == "keyring":
        from pqselfenc.keys.defaults import user_keyring

        unlock["keyring"] = user_keyring()
    else:
        _check_token_settings(creating)
        unlock["pin"] = read_secret(session, "pin_file", PIN_ENV, f"token PIN for {path}",
                                    reader=_pin_file)  # fmt: skip
    return unlock


def _check_token_settings(creating: bool) -> None:
    """Before asking for a PIN: the module (always) and the token label (a new store) must be
    named; an existing store uses the token it was created on."""
    missing = [name for name, needed in ((MODULE_ENV, True), (TOKEN_ENV, creating))
               if needed and not os.environ.get(name)]  # fmt: skip
    if missing:
        raise CliError(f"the pkcs11 backend needs {' and '.join('$' + m for m in missing)}",
                       hint=f"{MODULE_ENV}=/path/to/vendor-pkcs11.so (absolute path), "
                       f"{TOKEN_ENV}=TOKEN-LABEL")  # fmt: skip


def _open(session: Session, path: Path, kind: str, *, creating: bool,
          reset_anchor: bool = False) -> KeyStore:  # fmt: skip
    """Open the store; a PIN typed at the prompt that the token refuses is asked once more."""
    from pqselfenc.keys import KeyStore

    unlock = _unlock(session, path, kind, creating=creating)
    try:
        return KeyStore.open(path, reset_anchor=reset_anchor, **unlock)
    except TokenPinError:
        if kind != "pkcs11" or not _prompted(session, PIN_ENV, "pin_file"):
            raise
    session.console.warn("the token refused the PIN; one more try")
    unlock["pin"] = getpass.getpass(f"pqselfenc: token PIN for {path}: ")
    return KeyStore.open(path, reset_anchor=reset_anchor, **unlock)


def _prompted(session: Session, env: str, file_option: str) -> bool:
    """Whether ``read_secret`` asked on the terminal (no file option, no variable)."""
    return not session.option(file_option) and not os.environ.get(env)


def existing_key_store(session: Session) -> tuple[Path, str]:
    """``--home``'s key store and its backend; ``CliError`` if there is none."""
    path = key_store_path(session)
    existing = _existing_backend(path)
    if existing is None:
        raise CliError(
            f"no key store in {path}",
            hint="create one with 'pqselfenc keys generate NAME' (or pass --home)",
        )
    return path, existing


def audit_report(session: Session) -> AuditReport:
    """The audit report of ``--home``'s key store, verified without opening it for use."""
    from pqselfenc.keys import KeyStore

    path, existing = existing_key_store(session)
    kind = _choose_backend(session, path, existing)
    session.console.note(f"key store {path} ({BACKEND_LABELS[kind]})")
    return KeyStore.verify_audit(path, **_unlock(session, path, kind, creating=False))


def audit_export(session: Session, since: Any) -> AuditExport:
    """The audit export of ``--home``'s key store (``KeyStore.export_audit``), unlocked as
    ``audit_report`` unlocks it: verified line by line, never opened for use."""
    from pqselfenc.keys import KeyStore

    path, existing = existing_key_store(session)
    kind = _choose_backend(session, path, existing)
    session.console.note(f"key store {path} ({BACKEND_LABELS[kind]})")
    return KeyStore.export_audit(path, since=since,
                                 **_unlock(session, path, kind, creating=False))  # fmt: skip


def read_secret(
    session: Session, file_option: str, env: str, prompt: str, *, confirm: bool = False,
    reader: Callable[[Path], str] | None = None,
) -> str:  # fmt: skip
    """A passphrase (or PIN) from ``--FILE_OPTION`` (read by ``reader``, by default as a
    passphrase file), else ``$ENV``, else a terminal prompt."""
    from_file = session.option(file_option)
    if from_file:
        return (reader or _passphrase_file)(Path(from_file))
    value = os.environ.get(env)
    if value:
        return value
    if not is_tty(sys.stdin):
        flag = "--" + file_option.replace("_", "-")
        raise CliError(f"no {prompt.split(' for ')[0]} given and no terminal to ask on",
                       hint=f"set {env} or use {flag} FILE")  # fmt: skip
    first = getpass.getpass(f"pqselfenc: {prompt}: ")
    if confirm and getpass.getpass(f"pqselfenc: {prompt} (again): ") != first:
        raise CliError("the two passphrases differ")
    return first


def _passphrase_file(path: Path) -> str:
    try:
        with path.open("rb") as fh:  # bounded: /dev/zero is "too large", a pipe still works
            raw = fh.read(_MAX_PASSPHRASE_FILE + 1)
    except OSError as exc:
        raise CliError(f"cannot read passphrase file {path}: {exc.strerror}") from exc
    if len(raw) > _MAX_PASSPHRASE_FILE:
        raise CliError(f"passphrase file {path} is too large")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(f"passphrase file {path} is not UTF-8 text") from exc
    return text.removesuffix("\n").removesuffix("\r")


def _pin_file(path: Path) -> str:
    """The first line of ``path``: a regular file of this user that nobody else can read or
    write (mode 0600 or stricter), never read through a link, bounded."""
    from pqselfenc.core import _durable

    try:
        with _durable.open_file(path) as fh:
            _check_pin_file(path, os.fstat(fh.fileno()))
            raw = fh.read(_MAX_PIN_FILE + 1)
    except OSError as exc:
        raise CliError(f"cannot read PIN file {path}: {_durable.describe(exc)}",
                       hint="give a regular file (not a link, pipe or device)") from exc
    if len(raw) > _MAX_PIN_FILE:
        raise CliError(f"PIN file {path} is too large")
    try:
        pin = raw.decode("utf-8").split("\n", 1)[0].removesuffix("\r")
    except UnicodeDecodeError as exc:
        raise CliError(f"PIN file {path} is not UTF-8 text") from exc
    if not pin:
        raise CliError(f"PIN file {path} has an empty first line")
    return pin


def _check_pin_file(path: Path, st: os.stat_result) -> None:
    if st.st_uid != os.geteuid():
        raise CliError(f"PIN file {path} belongs to uid {st.st_uid}, not to this user",
                       hint="keep the PIN in a file of your own, mode 0600")  # fmt: skip
    if st.st_mode & 0o077:
        raise CliError(f"PIN file {path} can be read or written by others (mode "
                       f"{st.st_mode & 0o777:04o})", hint=f"chmod 600 {path}")  # fmt: skip


# -- what the other commands need --------------------------------------------------------------


def convergence_secret(session: Session) -> bytes:
    return key_store(session).convergence_secret()


def secret_config(session: Session, config: EncryptionConfig, needed: bool) -> EncryptionConfig:
    """``config`` with the key store's convergence secret when ``needed``."""
    if not needed:
        return config
    return config.with_convergence_secret(convergence_secret(session))


def open_sealed(session: Session, raw: bytes, where: str, *, signer: str | None) -> DataMap:
    """Open a sealed map with the local identities; with ``signer``, only if signed by it."""
    store = key_store(session)
    try:
        return store.open_envelope(raw, signer=signer)
    except InvalidDataError as exc:
        raise CliError(f"{where}: {exc}", hint="the sealed map is damaged or truncated") from exc


def seal_map(session: Session, data_map: DataMap, recipients: list[str]) -> bytes:
    return key_store(session).seal(data_map, to=recipients, sign_as=session.option("sign_as"))


def check_recipients(session: Session, names: list[str]) -> None:
    """Fail before any work if a ``--to`` name is neither a recipient nor a local identity."""
    store = key_store(session)
    identities = store.identities
    for name in names:
        if name not in store.recipients and name not in identities:
            raise KeyNotFound(f"no recipient or identity named {name!r}")
    signer = session.option("sign_as")
    if signer and signer not in identities:
        raise KeyNotFound(f"no local identity named {signer!r} to sign with")
