"""``pqselfenc keys ...``, ``pqselfenc recipients ...`` and ``pqselfenc rewrap``."""

from __future__ import annotations

import argparse
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pqselfenc.cli import _escrow
from pqselfenc.cli._keyring import key_store, name_arg, read_secret
from pqselfenc.cli._maps import MapPolicy, read_map_file
from pqselfenc.cli._output import (
    CliError,
    default_file_mode,
    read_input,
    write_file,
)
from pqselfenc.cli._session import Session
from pqselfenc.cli._values import count_arg, path_arg
from pqselfenc.core import _durable
from pqselfenc.core import _primitives as P
from pqselfenc.error import KeyStoreError

if TYPE_CHECKING:
    from pqselfenc.keys import Identity, KeyStore, KeyVersion, RecipientEntry

__all__ = ["add_parsers"]

EXPORT_PASSPHRASE_ENV = "PQSELFENC_EXPORT_PASSPHRASE"  # noqa: S105 (a variable name)
# The names the library defines (pqselfenc.kem.SUITE_NAMES and SIGNATURE_ALGORITHMS are these
# same tables): read from the primitives module, which the CLI loads anyway, so that building the
# parser does not import the KEM layer (start-up time).
SUITES = tuple(P.SUITE_IDS)
SIGNATURES = tuple(P.SIG_IDS)
_KEY_TEXT = re.compile(
    rf"({re.escape(P.PUBLIC_KEY_TEXT_PREFIX)}|{re.escape(P.VERIFYING_KEY_TEXT_PREFIX)})"
)


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    _keys_parsers(sub, common)
    _recipient_parsers(sub, common)
    rewrap = sub.add_parser(
        "rewrap", parents=[common], help="re-seal sealed maps for the current keys",
        description="Open each sealed MAP and seal it again, in place, for the same "
        "recipients' current key versions (after a rotation). The chunks are not touched.",
    )  # fmt: skip
    rewrap.add_argument("maps", nargs="+", metavar="MAP", type=path_arg)
    rewrap.add_argument(
        "--sign-as", metavar="NAME", type=name_arg,
        help="sign with this local identity (default: the original signer, if it is yours)",
    )  # fmt: skip
    rewrap.add_argument(
        "--drop-signature", action="store_true",
        help="write the new map unsigned (needed for a map a recipient signed)",
    )  # fmt: skip
    rewrap.set_defaults(func=rewrap_maps)


def _keys_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    keys = sub.add_parser(
        "keys",
        help="generate, list, rotate, destroy, export, import keys",
        description="Your identities: versioned ML-KEM + ML-DSA keys.",
    )
    actions = keys.add_subparsers(dest="action", metavar="ACTION", required=True)
    gen = actions.add_parser("generate", parents=[common], help="create a new identity")
    gen.add_argument("name", metavar="NAME", type=name_arg)
    gen.add_argument("--suite", choices=SUITES, help="KEM suite (default x-wing)")
    gen.add_argument("--signature", choices=SIGNATURES, help="signature (default ml-dsa-65)")
    gen.set_defaults(func=generate)
    listing = actions.add_parser("list", parents=[common], help="identities and their versions")
    listing.set_defaults(func=list_keys)
    rotate = actions.add_parser(
        "rotate", parents=[common], help="new active version; the old one stays for decryption"
    )
    rotate.add_argument("names", nargs="*", metavar="NAME", type=name_arg)
    rotate.add_argument(
        "--due",
        action="store_true",
        help="rotate every identity past its rotation interval (for cron)",
    )
    rotate.set_defaults(func=rotate_keys)
    destroy = actions.add_parser(
        "destroy", parents=[common], help="crypto-shred one key version (irreversible)"
    )
    destroy.add_argument("name", metavar="NAME", type=name_arg)
    destroy.add_argument("--version", type=count_arg, required=True, metavar="N")
    destroy.add_argument(
        "--yes",
        action="store_true",
        help="confirm: maps sealed only to it can never be opened again",
    )
    destroy.set_defaults(func=destroy_key)
    export = actions.add_parser(
        "export", parents=[common], help="public key text, or a passphrase-protected secret export"
    )
    export.add_argument("name", metavar="NAME", type=name_arg)
    export.add_argument(
        "--public", action="store_true", help="the public keys to give people who encrypt for you"
    )
    export.add_argument("--out", default="-", metavar="FILE", help="output file (default stdout)")
    export.add_argument(
        "--export-passphrase-file",
        metavar="FILE",
        help=f"passphrase of a secret export (else ${EXPORT_PASSPHRASE_ENV})",
    )
    export.add_argument("--force", action="store_true", help="overwrite an existing file")
    export.set_defaults(func=export_key)
    imp = actions.add_parser("import", parents=[common], help="add an exported identity")
    imp.add_argument("file", metavar="FILE", type=path_arg)
    imp.add_argument("--name", metavar="NAME", type=name_arg, help="import under another name")
    imp.add_argument(
        "--export-passphrase-file",
        metavar="FILE",
        help=f"passphrase of the export (else ${EXPORT_PASSPHRASE_ENV})",
    )
    imp.set_defaults(func=import_key)
    anchor = actions.add_parser(
        "anchor", parents=[common], help="show the rollback anchor, or reset it (audited)",
        description="The pkcs11 and keyring backends keep the store's latest state (metadata "
        "generation, audit head) outside its folder, and refuse a folder older than it. "
        "--reset accepts the folder as it is now: only after you know why it is older.",
    )  # fmt: skip
    anchor.add_argument("--reset", action="store_true",
                        help="accept the folder as it is and anchor it anew (audited)")
    anchor.add_argument("--yes", action="store_true", help="confirm --reset")
    anchor.set_defaults(func=anchor_cmd)


def _recipient_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    rec = sub.add_parser(
        "recipients",
        help="the people you encrypt for",
        description="Named public keys that --to accepts.",
    )
    actions = rec.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", parents=[common], help="add a recipient's public key")
    add.add_argument("name", metavar="NAME", type=name_arg)
    add.add_argument(
        "key",
        metavar="KEYFILE|KEYTEXT",
        help="what 'pqselfenc keys export NAME --public' printed, or a file of it",
    )
    add.add_argument("--replace", action="store_true", help="replace an existing recipient")
    add.set_defaults(func=add_recipient)
    listing = actions.add_parser("list", parents=[common], help="list recipients")
    listing.set_defaults(func=list_recipients)
    remove = actions.add_parser("remove", parents=[common], help="forget a recipient")
    remove.add_argument("name", metavar="NAME", type=name_arg)
    remove.set_defaults(func=remove_recipient)
    _escrow.add_parsers(actions, common)


# -- keys --------------------------------------------------------------------------------------


def _version_doc(v: KeyVersion) -> dict[str, Any]:
    return {
        "version": v.version, "state": v.state.value, "created": v.created.isoformat(),
        "key_id": v.key_id, "fingerprint": v.fingerprint,
    }  # fmt: skip


def _version_line(name: str, v: KeyVersion) -> str:
    return (f"{name} v{v.version} {v.state.value} created {v.created:%Y-%m-%d} "
            f"fingerprint {v.fingerprint}")  # fmt: skip


def generate(session: Session) -> int:
    args = session.args
    version = key_store(session, create=True).generate(
        args.name, suite=args.suite, signature=args.signature
    )
    session.console.result(
        {"name": args.name, **_version_doc(version)},
        [_version_line(args.name, version),
         f"share your public key: pqselfenc keys export {args.name} --public --out "
         f"{args.name}.pub"],
    )  # fmt: skip
    return 0


def _identity_doc(ident: Identity, due: set[str]) -> dict[str, Any]:
    return {"name": ident.name, "suite": ident.suite, "signature": ident.signature,
            "rotation_due": ident.name in due,
            "versions": [_version_doc(v) for v in ident.versions]}  # fmt: skip


def _protection(store: KeyStore) -> tuple[dict[str, Any], list[str]]:
    """Which backend, rollback protection and (pkcs11) token capabilities the store has."""
    protection, token = store.rollback_protection(), store.token_capabilities()
    doc = {"backend": store.backend, "rollback_protection": protection, "token": token}
    return doc, [protection] + ([token] if token else [])


def list_keys(session: Session) -> int:
    store = key_store(session)
    due = {d.name for d in store.due()}
    idents = sorted(store.identities.values(), key=lambda i: i.name)
    store_doc, lines = _protection(store)
    for ident in idents:
        mark = "  (rotation due)" if ident.name in due else ""
        lines.append(f"{ident.name}: {ident.suite}, {ident.signature}{mark}")
        lines += ["  " + _version_line(ident.name, v) for v in ident.versions]
        lines += [_pending_line(ident.name, v.version) for v in ident.versions
                  if v.state.value == "destroy-pending"]  # fmt: skip
    if not idents:
        lines.append("no identities")
    session.console.result({"identities": [_identity_doc(i, due) for i in idents],
                            "store": store_doc}, lines)  # fmt: skip
    return 0


def anchor_cmd(session: Session) -> int:
    """``keys anchor``: where the rollback anchor is and what it records; ``--reset --yes``
    accepts the folder as it is (the old values go into the audit log)."""
    args = session.args
    if args.reset and not args.yes:
        raise CliError("resetting the rollback anchor accepts the key store folder as it is now",
                       hint="do it only once you know why the folder is older than its anchor "
                       "(a restore from backup you meant); add --yes")  # fmt: skip
    store = key_store(session, reset_anchor=args.reset)
    if args.reset and store.backend == "file":
        raise CliError("this key store (file backend) keeps no rollback anchor")
    doc, lines = _protection(store)
    if args.reset:
        lines.insert(0, "rollback anchor reset: the folder as it is now is the store's state")
    session.console.result(doc, lines)
    return 0


def rotate_keys(session: Session) -> int:
    args = session.args
    if bool(args.names) == bool(args.due):
        raise CliError("give NAMEs to rotate, or --due", hint="see 'pqselfenc keys rotate --help'",
                       code=2)  # fmt: skip
    store = key_store(session)
    if args.due:
        names = [d.name for d in store.due()]
        versions = store.rotate_due()
    else:
        names = list(args.names)
        versions = [store.rotate(name) for name in names]
    rotated = [{"name": n, **_version_doc(v)} for n, v in zip(names, versions, strict=True)]
    lines = [_version_line(n, v) for n, v in zip(names, versions, strict=True)]
    session.console.result({"rotated": rotated}, lines or ["no identity is due for rotation"])
    return 0


def destroy_key(session: Session) -> int:
    args = session.args
    if not args.yes:
        raise CliError(
            f"destroying {args.name} v{args.version} is irreversible",
            hint="maps sealed only to that version can never be opened again; add --yes",
        )
    store = key_store(session)
    try:
        version = store.destroy(args.name, args.version)
    except KeyStoreError as exc:
        if store.identity(args.name).version(args.version).state.value != "destroy-pending":
            raise
        hint = f"{_PENDING}: run this command again to retry (so does every open of the store)"
        raise CliError(f"{args.name} v{args.version} is marked destroy-pending, but its secret "
                       f"could not be deleted: {exc}", hint=hint) from exc  # fmt: skip
    session.console.result({"name": args.name, **_version_doc(version)},
                           [_version_line(args.name, version)])  # fmt: skip
    return 0


_PENDING = "it is never used again, but its secret is still in the backend"


def _pending_line(name: str, version: int) -> str:
    return (f"    {name} v{version}: {_PENDING}; retry: pqselfenc keys destroy {name} "
            f"--version {version} --yes")  # fmt: skip


def _public_text(session: Session, name: str) -> str:
    store = key_store(session)
    active = store.identity(name).active
    if active is None:
        raise CliError(f"{name} has no active key version", hint=f"pqselfenc keys rotate {name}")
    return f"{active.public_key}\n{active.verifying_key}\n"


def export_key(session: Session) -> int:
    args = session.args
    to_stdout = args.out == "-"
    if args.public:
        text = _public_text(session, args.name)
        if to_stdout:
            out = session.console.data_stdout("public key text", binary=False)
            out.write(text.encode())
            out.flush()
        else:
            write_file(Path(args.out), text.encode(), mode=default_file_mode(), force=args.force)
        return 0
    stream = session.console.data_stdout("a secret key export") if to_stdout else None
    passphrase = read_secret(session, "export_passphrase_file", EXPORT_PASSPHRASE_ENV,
                             "passphrase for the export", confirm=True)  # fmt: skip
    blob = key_store(session).export_identity(args.name, passphrase)
    if stream is not None:
        stream.write(blob)
        stream.flush()
    else:
        write_file(Path(args.out), blob, mode=0o600, force=args.force)
        session.console.note(f"wrote {args.out}: the secret keys of {args.name}, "
                             "protected by the export passphrase")  # fmt: skip
    return 0


def import_key(session: Session) -> int:
    args = session.args
    blob = read_input(args.file, "export file", limit=P.MAX_EXPORT_FILE_SIZE)
    passphrase = read_secret(session, "export_passphrase_file", EXPORT_PASSPHRASE_ENV,
                             "passphrase of the export")  # fmt: skip
    ident = key_store(session, create=True).import_identity(blob, passphrase, name=args.name)
    session.console.result(_identity_doc(ident, set()),
                           [f"imported {ident.name} ({len(ident.versions)} versions)"])  # fmt: skip
    return 0


# -- recipients --------------------------------------------------------------------------------


def parse_key_text(text: str) -> tuple[str, str | None]:
    """(public key text, verifying key text or None) from what ``keys export --public`` wrote."""
    body = "\n".join(x for x in text.splitlines() if not x.lstrip().startswith("#"))
    parts = _KEY_TEXT.split(body)
    found: dict[str, list[str]] = {}
    for prefix, rest in zip(parts[1::2], parts[2::2], strict=True):
        found.setdefault(prefix, []).append(prefix + rest.strip())
    public = found.get(P.PUBLIC_KEY_TEXT_PREFIX, [])
    verifying = found.get(P.VERIFYING_KEY_TEXT_PREFIX, [])
    if len(public) != 1 or len(verifying) > 1:
        raise CliError("expected one public key (pqse-pub-...) and at most one verifying key "
                       "(pqse-sig-...)", hint="give what 'pqselfenc keys export NAME --public' "
                       "printed")  # fmt: skip
    return public[0], verifying[0] if verifying else None


def _key_argument(value: str) -> str:
    if value.lstrip().startswith(P.PUBLIC_KEY_TEXT_PREFIX):
        return value
    raw = read_input(Path(value), "key file", limit=P.MAX_KEY_TEXT_FILE_SIZE)
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise CliError(f"key file {value} is not key text") from exc


def _recipient_doc(r: RecipientEntry) -> dict[str, Any]:
    return {"name": r.name, "suite": r.suite, "key_id": r.key_id, "fingerprint": r.fingerprint,
            "added": r.added.isoformat(), "verifying_key": r.verifying_key is not None}  # fmt: skip


def _recipient_line(r: RecipientEntry) -> str:
    signs = ", verifies signatures" if r.verifying_key else ""
    return f"{r.name}: {r.suite}, fingerprint {r.fingerprint}{signs}"


def add_recipient(session: Session) -> int:
    args = session.args
    public, verifying = parse_key_text(_key_argument(args.key))
    store = key_store(session, create=True)
    try:
        entry = store.recipients.add(
            args.name, public, verifying_key=verifying, replace_existing=args.replace
        )
    except KeyStoreError as exc:  # checked under the store lock: no race with another process
        if args.replace or args.name not in store.recipients:
            raise
        raise CliError(f"recipient {args.name!r} already exists",
                       hint="use --replace to change their key") from exc  # fmt: skip
    session.console.result(_recipient_doc(entry), [f"added {_recipient_line(entry)}"])
    return 0


def list_recipients(session: Session) -> int:
    entries = list(key_store(session).recipients)
    session.console.result({"recipients": [_recipient_doc(r) for r in entries]},
                           [_recipient_line(r) for r in entries] or ["no recipients"])  # fmt: skip
    return 0


def remove_recipient(session: Session) -> int:
    key_store(session).recipients.remove(session.args.name)
    session.console.result({"removed": session.args.name}, [f"removed {session.args.name}"])
    return 0


# -- rewrap ------------------------------------------------------------------------------------


def rewrap_maps(session: Session) -> int:
    """Re-seal each map in place. Each must be a regular file with no other name: every map is
    checked before any is read, and again (the same file) just before it is replaced."""
    policy = MapPolicy(require_sealed=True, sealed_hint="only sealed maps can be rewrapped; "
                       "seal an unsealed one with 'pqselfenc encrypt --to'")  # fmt: skip
    seen = {path: _own_map_file(path) for path in session.args.maps}
    raws = {path: read_map_file(path, policy).raw for path in seen}
    store = key_store(session)
    for path, raw in raws.items():
        new = store.rewrap(raw, sign_as=session.args.sign_as,
                           drop_signature=session.args.drop_signature)  # fmt: skip
        if _identity(_own_map_file(path)) != _identity(seen[path]):
            raise CliError(f"{path} was replaced while it was being rewrapped; it was not "
                           "written", hint="run rewrap again")  # fmt: skip
        write_file(path, new, mode=stat.S_IMODE(seen[path].st_mode), force=True)
    names = [str(p) for p in raws]
    session.console.result({"rewrapped": names}, [f"rewrapped {n}" for n in names])
    return 0


def _own_map_file(path: Path) -> os.stat_result:
    """``lstat`` of a map rewrap may replace: the file itself, with one name. Replacing a
    symbolic link, or one of several hard links, would give that name the new sealing and leave
    the file behind the others sealed for the old key versions, which ``keys destroy`` then
    makes unopenable: refused, as a FIFO or folder is."""
    entry = _durable.lstat_entry(path)
    if entry is None:
        raise CliError(f"map {path} does not exist")
    if stat.S_ISLNK(entry.st_mode):
        raise CliError(f"{path} is a symbolic link: rewrap replaces a map file itself, and the "
                       "file it points to would keep the old sealing",
                       hint=f"rewrap the file it points to: {os.path.realpath(path)}")  # fmt: skip
    if not stat.S_ISREG(entry.st_mode):
        raise CliError(f"map {path} is a {_durable.kind_of(entry.st_mode)}, not a regular file")
    if entry.st_nlink != 1:
        raise CliError(f"{path} has {entry.st_nlink - 1} other hard link(s): rewrap replaces "
                       "this name only, and the others would keep the old sealing",
                       hint="remove the other names (or rewrap a copy: cp, then rewrap the "
                       "copy)")  # fmt: skip
    return entry


def _identity(entry: os.stat_result) -> tuple[int, ...]:
    """The same file with the same content, as far as ``lstat`` tells (reading changes only
    its access time)."""
    return entry.st_dev, entry.st_ino, entry.st_nlink, entry.st_size, entry.st_mtime_ns

