"""Attacks on the rollback anchor, kept as tests (issue 15: "attack the anchor").

Attacker 1 can write the key store folder, nothing else (no PIN, no keyring session): every edit
of what tells ``open`` whether and where to look for the anchor is refused loudly; a rollback is
refused at open and, while a store is open, at its next read (any backend, the file one too).

Attacker 2 can also write SoftHSM's token folder (a software token keeps its state in files):
what that buys is tested against a private SoftHSM in child processes. Putting back the token
folder together with the store folder rolls the anchor back with it and goes unseen: a software
token's anchor is only as strong as its folder's protection (threat-model/keys.md). Putting back
only one of the two is caught or harmless, and deleting any one token object file is loud.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _anchored import Anchored, anchored_fixture  # noqa: F401  (registers "anchored")
from _keys_support import PASSPHRASE, FakeClock, small_map
from _softhsm import SoftHsm, make_softhsm

from pqselfenc.error import IntegrityError, InvalidDataError, KeyStoreError, RollbackError
from pqselfenc.keys import KeyStore

TESTS = Path(__file__).resolve().parent


# ---- attacker 1: the store folder only ----------------------------------------------------------


def rewrite(path: Path, edit: dict[str, object]) -> None:
    doc = json.loads(path.read_text())
    for key, value in edit.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


RECORD = {"token": "t", "key_label": "pqselfenc-x", "key_id": "00" * 16}
EDITS: dict[str, dict[str, dict[str, object]]] = {  # by backend: what to make of keystore.json
    "pkcs11": {
        "anchor removed": {"anchor": None},
        "anchor moved": {"anchor": "keyring"},
        "backend made file": {"backend": "file", "anchor": None, "pkcs11": None},
        "backend made keyring": {"backend": "keyring", "anchor": "keyring", "pkcs11": None},
        "token record removed": {"pkcs11": None},
    },
    "keyring": {
        "anchor removed": {"anchor": None},
        "anchor moved": {"anchor": "token"},
        "backend made file": {"backend": "file", "anchor": None},
        "backend made pkcs11": {"backend": "pkcs11", "anchor": "token", "pkcs11": RECORD},
        "token record added": {"pkcs11": RECORD},
    },
}


@pytest.mark.parametrize("edit", range(5))
def test_the_folder_cannot_switch_the_anchor_off(anchored: Anchored, tmp_path: Path,
                                                 edit: int) -> None:  # fmt: skip
    """Whatever a folder writer edits to make ``open`` skip the anchor is refused: the parse,
    the backend choice or the MAC fails before anything is used."""
    ks = anchored.open(tmp_path / "ks")
    ks.generate("alice")
    ks.close()
    changes = sorted(EDITS[anchored.kind].items())[edit][1]
    rewrite(ks.directory / "keystore.json", changes)
    with pytest.raises((IntegrityError, InvalidDataError, KeyStoreError)):
        anchored.open(ks.directory)
    with pytest.raises((IntegrityError, InvalidDataError, KeyStoreError)):
        KeyStore.open(ks.directory, backend="file", passphrase=PASSPHRASE)


def test_a_rollback_while_open_is_caught_with_the_file_backend_too(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The generation floor is the ledger's, not the anchor's: it holds for every backend."""
    ks = KeyStore.open(tmp_path / "ks", passphrase=PASSPHRASE, clock=clock)
    ks.generate("alice")
    shutil.copytree(ks.directory, tmp_path / "copy")
    ks.rotate("alice")
    shutil.rmtree(ks.directory)
    shutil.copytree(tmp_path / "copy", ks.directory)
    with pytest.raises(RollbackError, match="went back from generation 3 to 2"):
        ks.seal(small_map(), to=["alice"])


def test_the_anchor_cannot_be_reached_from_the_folder(anchored: Anchored, tmp_path: Path) -> None:
    """Deleting the folder's every file but keystore.json, or the whole folder, never deletes
    or lowers the anchor: a later copy of the old folder is still refused."""
    ks = anchored.open(tmp_path / "ks")
    ks.generate("alice")
    ks.close()
    shutil.copytree(ks.directory, tmp_path / "copy")
    again = anchored.open(ks.directory)
    again.rotate("alice")
    again.close()
    anchor = anchored.anchor(ks.directory)
    shutil.rmtree(ks.directory)
    fresh = anchored.open(ks.directory)  # a new store with a new id: its own anchor
    fresh.close()
    shutil.rmtree(ks.directory)
    shutil.copytree(tmp_path / "copy", ks.directory)
    assert anchored.anchor(ks.directory) == anchor
    with pytest.raises(RollbackError):
        anchored.open(ks.directory)


# ---- attacker 2: the store folder and SoftHSM's token folder -----------------------------------

STEP = """
import os, sys
from pqselfenc.keys import KeyStore
from _keys_support import FakeClock
action, path = sys.argv[1], sys.argv[2]
try:
    ks = KeyStore.open(path, backend="pkcs11", clock=FakeClock())
except Exception as exc:
    print(f"refused {type(exc).__name__}: {exc}")
    sys.exit(0)
if action == "create":
    ks.generate("alice")
elif action == "change":
    ks.rotate("alice")
    ks.generate("bob")
print("opened", sorted(ks.identities), ks.identity("alice").latest)
ks.close()
"""


class PrivateToken:
    """A SoftHSM of its own (config, token folder), used only by child processes."""

    def __init__(self, root: Path) -> None:
        self.hsm: SoftHsm = make_softhsm(root)

    def step(self, action: str, store: Path) -> str:
        env = {**self.hsm.env(),
               "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}  # fmt: skip
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(STEP), action, str(store)],
                              env=env, capture_output=True, text=True, timeout=240,
                              check=False)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout.strip()

    def objects(self) -> list[Path]:
        return sorted(self.hsm.tokendir.rglob("*.object"))


def put_back(copy: Path, target: Path) -> None:
    shutil.rmtree(target)
    shutil.copytree(copy, target)


@pytest.fixture
def private_token(softhsm: SoftHsm, tmp_path: Path) -> PrivateToken:
    """Needs SoftHSM (``softhsm`` skips or fails as configured); a token of this test only."""
    root = tmp_path / "hsm"
    root.mkdir(mode=0o700)
    return PrivateToken(root)


def test_token_folder_and_store_folder_put_back_together_go_unseen(
    private_token: PrivateToken, tmp_path: Path
) -> None:
    """The limit, said in threat-model/keys.md: with a software token, who can write both
    folders rolls the store back undetected (a hardware token keeps its state out of reach)."""
    store, tokens = tmp_path / "ks", private_token.hsm.tokendir
    assert private_token.step("create", store).startswith("opened ['alice'] 1")
    shutil.copytree(store, tmp_path / "store-copy")
    shutil.copytree(tokens, tmp_path / "token-copy")
    assert private_token.step("change", store) == "opened ['alice', 'bob'] 2"
    put_back(tmp_path / "store-copy", store)
    assert "refused RollbackError" in private_token.step("open", store)  # the folder alone
    put_back(tmp_path / "token-copy", tokens)
    assert private_token.step("open", store) == "opened ['alice'] 1"  # both: unseen


def test_token_folder_put_back_alone_is_harmless(private_token: PrivateToken,
                                                 tmp_path: Path) -> None:  # fmt: skip
    """An older token folder with the current store folder: the anchor is behind the folder,
    which open catches up; nothing of the store is lost or rolled back."""
    store, tokens = tmp_path / "ks", private_token.hsm.tokendir
    private_token.step("create", store)
    shutil.copytree(tokens, tmp_path / "token-copy")
    private_token.step("change", store)
    put_back(tmp_path / "token-copy", tokens)
    assert private_token.step("open", store) == "opened ['alice', 'bob'] 2"


def test_deleting_any_one_token_object_is_loud(private_token: PrivateToken,
                                               tmp_path: Path) -> None:  # fmt: skip
    """Without the PIN the token's object files cannot be told apart; deleting each in turn
    shreds the store (the wrapping key), makes open refuse (the anchor; the token's own file),
    or touches another token: never a silent rollback."""
    store = tmp_path / "ks"
    private_token.step("create", store)
    private_token.step("change", store)
    outcomes = []
    for obj in private_token.objects():
        saved = obj.read_bytes()
        obj.unlink()
        outcomes.append(private_token.step("open", store))
        obj.write_bytes(saved)
    assert any("KeyDestroyedError" in o for o in outcomes), outcomes
    assert any("RollbackError" in o and "there is none" in o for o in outcomes), outcomes
    current = "opened ['alice', 'bob'] 2"
    assert all(o.startswith("refused") or o == current for o in outcomes), outcomes
    assert private_token.step("open", store) == current
