"""Key store operations on each secret backend: file, keyring, pkcs11 (issue 15's numbers).

    PYTHONPATH=$PWD python3 benchmarks/bench_keystore_backends.py [--runs N] [--json]

Per backend, medians over ``--runs`` (default 15) of: ``KeyStore.open`` of an existing store
(unlock: argon2id for the file backend, a keyring read, or a token login and unwrap; then the
audit and rollback-anchor checks), ``seal`` of a small DataMap to 10 recipients (unsigned, and
signed by the store's identity: the signing seed comes from the backend), ``open_envelope`` of a
map sealed to the identity, and ``rotate`` (a new seed written, a metadata commit, and for
keyring/pkcs11 an anchor write). Each store is closed (checkpoint, anchor) outside the timings.

pkcs11 runs on a fresh SoftHSM token made in a temp folder (Debian ``softhsm2``; the row is
skipped, saying so, without it). The keyring row needs a Secret Service: a D-Bus session with an
unlocked gnome-keyring, as scripts/test.sh sets up for the tests. Without one (no
``DBUS_SESSION_BUS_ADDRESS``, or the keyring does not answer) the row is skipped, saying so; to
include it, run in a throwaway session with a throwaway HOME (never your real keyring):

    HOME=$(mktemp -d) dbus-run-session -- bash -c 'eval "$(printf bench |
        gnome-keyring-daemon --unlock --components=secrets)";
        PYTHONPATH=$PWD python3 benchmarks/bench_keystore_backends.py'
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import median, report, row, timed

HERE = Path(__file__).resolve().parent
PASSPHRASE = "gravel orbit candle mosaic tundra"
RECIPIENTS = 10
OPERATIONS = ("open", "seal to 10", "seal to 10, signed", "open a sealed map", "rotate")


def softhsm(root: Path) -> dict[str, str] | None:
    """A fresh SoftHSM token under ``root`` (its variables), or None if SoftHSM is missing."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from _softhsm import make_softhsm, missing

    if missing() is not None:
        return None
    hsm = make_softhsm(root)
    return {k: v for k, v in hsm.env().items()
            if k.startswith(("PQSELFENC_PKCS11_", "SOFTHSM2_"))}  # fmt: skip


def keyring_missing() -> str | None:
    """Why the keyring row cannot run here (None if a Secret Service answers)."""
    if not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        return "no D-Bus session"
    try:
        from pqselfenc.keys.defaults import probe_keyring

        probe_keyring()
    except Exception as exc:  # KeyringUnavailable and whatever the probe meets
        return f"no usable Secret Service ({type(exc).__name__})"
    return None


def open_args(kind: str) -> dict[str, Any]:
    return {"backend": kind, "passphrase": PASSPHRASE if kind == "file" else None}


def measure(kind: str, folder: Path, runs: int) -> dict[str, float]:
    """Median milliseconds of each operation on a store of backend ``kind`` in ``folder``."""
    from pqselfenc import EncryptionConfig, SelfEncryptor
    from pqselfenc.kem import generate_identity
    from pqselfenc.keys import KeyStore

    data_map = SelfEncryptor(bytes(64 * 1024), EncryptionConfig(chunk_size=64)).encrypt()[0]
    ks = KeyStore.open(folder, **open_args(kind))
    ks.generate("me")
    names = [f"r{i}" for i in range(RECIPIENTS)]
    for name in names:
        ks.recipients.add(name, str(generate_identity("x-wing").recipient()))
    sealed = ks.seal(data_map, ["me"])
    ks.close()
    times: dict[str, list[float]] = {op: [] for op in OPERATIONS}
    for _ in range(runs):
        for op, seconds in one_round(kind, folder, data_map, names, sealed).items():
            times[op].append(seconds)
    return {op: median(values) * 1000 for op, values in times.items()}


def one_round(kind: str, folder: Path, data_map: Any, names: list[str],
              sealed: bytes) -> dict[str, float]:  # fmt: skip
    """Seconds of each operation once, on the store reopened (closed again untimed)."""
    from pqselfenc.keys import KeyStore

    opened: list[Any] = []
    out = {"open": timed(lambda: opened.append(KeyStore.open(folder, **open_args(kind))))}
    ks = opened[0]
    steps: dict[str, Callable[[], object]] = {
        "seal to 10": lambda: ks.seal(data_map, names),
        "seal to 10, signed": lambda: ks.seal(data_map, names, sign_as="me"),
        "open a sealed map": lambda: ks.open_envelope(sealed),
        "rotate": lambda: ks.rotate("me"),
    }
    out.update((op, timed(step)) for op, step in steps.items())
    ks.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="pqse-bench-keys-") as tmp:
        root = Path(tmp)
        (root / "hsm").mkdir(mode=0o700)
        token = softhsm(root / "hsm")
        if token is not None:
            os.environ.update(token)  # before the PKCS#11 module is first loaded
        skipped = {"pkcs11": None if token else "SoftHSM 2 or python-pkcs11 is not installed",
                   "keyring": keyring_missing(), "file": None}  # fmt: skip
        for kind in ("file", "keyring", "pkcs11"):
            if skipped[kind] is not None:
                note = f"skipped: {skipped[kind]}"
                if kind == "keyring":
                    note += " (needs scripts/test.sh's D-Bus session: see this script's docstring)"
                rows.append(row("keystore", f"{kind}: all", note=note))
                print(f"{kind}: {note}", file=sys.stderr)
                continue
            for op, ms in measure(kind, root / kind, args.runs).items():
                rows.append(row("keystore", f"{kind}: {op}", ms=ms))
    header = (f"key store backends, medians of {args.runs} runs (pkcs11: SoftHSM; "
              f"file: argon2id t=3, 64 MiB at open)")  # fmt: skip
    report("keystore_backends", rows, header)
    return 0


if __name__ == "__main__":
    sys.exit(main())
