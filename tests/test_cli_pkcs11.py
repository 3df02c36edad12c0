"""The command line on the pkcs11 backend (real SoftHSM token) and the rollback anchor commands.

End to end in real processes: ``keys generate alice --backend pkcs11`` with the PIN from the
environment, ``encrypt --to alice``, ``decrypt`` with ``--pin-file``. The PIN file's rules
(first line; a regular file of this user nobody else can read or write; never a link or a FIFO),
no PIN and no terminal, the module not named, a wrong PIN (and the one re-prompt at a terminal),
what a new store says (token capabilities, rollback protection; a warning for the file backend),
``keys list``, and a whole-folder rollback refused then accepted with ``keys anchor --reset``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cli_helpers import FakeTerminal, Result, clean_env, run, run_process
from _keys_support import OwnCollection, needs_secret_service
from _softhsm import SoftHsm

from pqselfenc.keys import _pkcs11
from pqselfenc.keys import pkcs11_backend as pb

CAPABILITIES = "implements no ML-KEM/ML-DSA mechanisms"


@pytest.fixture
def hsm_env(softhsm: SoftHsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """In-process commands on the token: a home, a chunk store, the module and token named (no
    PIN); a PIN file ``pin`` (0600). Every token session is given back afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PQSELFENC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PQSELFENC_STORE", str(tmp_path / "chunks"))
    monkeypatch.setenv("PQSELFENC_PKCS11_MODULE", softhsm.module)
    monkeypatch.setenv("PQSELFENC_PKCS11_TOKEN", softhsm.token)
    monkeypatch.delenv("PQSELFENC_PKCS11_PIN", raising=False)
    pin = tmp_path / "pin"
    pin.write_text(softhsm.pin + "\n")
    pin.chmod(0o600)
    yield pin
    assert _pkcs11._OPEN == {}, "a command left a PKCS#11 session open"


def ok(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Result:
    result = run(capsys, *argv)
    assert result.code == 0, result.err
    return result


def test_the_cli_names_the_variables_the_library_reads() -> None:
    from pqselfenc.cli import _keyring

    assert (_keyring.PIN_ENV, _keyring.MODULE_ENV, _keyring.TOKEN_ENV) == (
        _pkcs11.ENV_PIN, _pkcs11.ENV_MODULE, _pkcs11.ENV_TOKEN)  # fmt: skip


def test_end_to_end_in_real_processes(softhsm: SoftHsm, tmp_path: Path) -> None:
    env = clean_env(tmp_path / "user", PQSELFENC_HOME=str(tmp_path / "home"),
                    PQSELFENC_STORE=str(tmp_path / "chunks"),
                    **{k: v for k, v in softhsm.env().items()
                       if k.startswith(("PQSELFENC_PKCS11_", "SOFTHSM2_"))})  # fmt: skip
    created = run_process("keys", "generate", "alice", "--backend", "pkcs11", env=env,
                          cwd=tmp_path)  # fmt: skip
    err = created.stderr.decode()
    assert created.returncode == 0, err
    assert "(PKCS#11 token)" in err and CAPABILITIES in err
    assert f"rollback anchor in token {softhsm.token!r}" in err and "warning" not in err
    (tmp_path / "report.txt").write_bytes(os.urandom(5000))
    sealed = run_process("encrypt", "report.txt", "--to", "alice", "--out", "report.map",
                         env=env, cwd=tmp_path)  # fmt: skip
    assert sealed.returncode == 0, sealed.stderr.decode()
    pin = tmp_path / "pin.txt"
    pin.write_text(softhsm.pin + "\nsecond line ignored\n")
    pin.chmod(0o600)
    no_pin_env = {k: v for k, v in env.items() if k != "PQSELFENC_PKCS11_PIN"}
    opened = run_process("decrypt", "report.map", "--out", "back.txt", "--pin-file", str(pin),
                         env=no_pin_env, cwd=tmp_path)  # fmt: skip
    assert opened.returncode == 0, opened.stderr.decode()
    assert (tmp_path / "back.txt").read_bytes() == (tmp_path / "report.txt").read_bytes()
    for path in (tmp_path / "home" / "keys" / "secrets").iterdir():
        assert path.suffix == ".p11"  # only wrapped blobs in the folder
    refused = run_process("keys", "list", env=no_pin_env, cwd=tmp_path, stdin=b"")
    assert refused.returncode == 1
    assert b"no token PIN given and no terminal to ask on" in refused.stderr
    assert b"PQSELFENC_PKCS11_PIN or use --pin-file" in refused.stderr


def test_the_pin_file_rules(capsys: pytest.CaptureFixture[str], hsm_env: Path,
                            tmp_path: Path) -> None:  # fmt: skip
    ok(capsys, "keys", "generate", "alice", "--backend", "pkcs11", "--pin-file", hsm_env)
    hsm_env.chmod(0o640)
    shared = run(capsys, "keys", "list", "--pin-file", hsm_env)
    assert "can be read or written by others (mode 0640)" in shared.error_line()
    assert "chmod 600" in shared.err
    hsm_env.chmod(0o600)
    link = tmp_path / "pin-link"
    link.symlink_to(hsm_env)
    assert "symbolic link" in run(capsys, "keys", "list", "--pin-file", link).error_line()
    fifo = tmp_path / "pin-fifo"
    os.mkfifo(fifo)
    assert "FIFO" in run(capsys, "keys", "list", "--pin-file", fifo).error_line()  # no hang
    empty = tmp_path / "empty"
    empty.write_text("\nsecret on the second line\n")
    empty.chmod(0o600)
    assert "empty first line" in run(capsys, "keys", "list", "--pin-file", empty).error_line()
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-pin\n")
    wrong.chmod(0o600)
    refused = run(capsys, "keys", "list", "--pin-file", wrong)
    assert "refused the PIN (PinIncorrect)" in refused.error_line()
    assert "PQSELFENC_PKCS11_PIN or --pin-file" in refused.err
    assert "alice" in ok(capsys, "keys", "list", "--pin-file", hsm_env).out


def test_the_module_and_token_must_be_named(capsys: pytest.CaptureFixture[str], hsm_env: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv("PQSELFENC_PKCS11_TOKEN")
    missing = run(capsys, "keys", "generate", "alice", "--backend", "pkcs11", "--pin-file", hsm_env)
    assert "needs $PQSELFENC_PKCS11_TOKEN" in missing.error_line()
    monkeypatch.setenv("PQSELFENC_PKCS11_TOKEN", "no-such-token")
    absent = run(capsys, "keys", "generate", "alice", "--backend", "pkcs11", "--pin-file", hsm_env)
    assert "no PKCS#11 token labelled 'no-such-token'" in absent.error_line()
    assert "that the token is present" in absent.err
    monkeypatch.delenv("PQSELFENC_PKCS11_MODULE")
    nomodule = run(capsys, "keys", "list", "--backend", "pkcs11")
    assert "no key store in" in nomodule.error_line()  # no store yet: said before anything
    created = run(capsys, "keys", "generate", "bob", "--backend", "pkcs11")
    assert "needs $PQSELFENC_PKCS11_MODULE" in created.error_line()  # before any PIN prompt


def test_a_wrong_pin_at_the_prompt_is_asked_once_more(
    capsys: pytest.CaptureFixture[str], hsm_env: Path, softhsm: SoftHsm,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import getpass

    ok(capsys, "keys", "generate", "alice", "--backend", "pkcs11", "--pin-file", hsm_env)
    monkeypatch.setattr(sys, "stdin", FakeTerminal())
    prompts: list[str] = []
    answers = iter(["wrong-1", softhsm.pin, "wrong-2", "wrong-3", "never asked"])

    def answer(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(getpass, "getpass", answer)
    second = ok(capsys, "keys", "list")
    assert "warning: the token refused the PIN; one more try" in second.err
    assert len(prompts) == 2 and "token PIN for" in prompts[0]
    refused = run(capsys, "keys", "list")
    assert "refused the PIN" in refused.error_line() and len(prompts) == 4  # one retry only
    assert softhsm.pin not in second.err + second.out + refused.err


def test_what_a_new_store_says_and_keys_list(capsys: pytest.CaptureFixture[str], hsm_env: Path,
                                             softhsm: SoftHsm) -> None:  # fmt: skip
    created = ok(capsys, "keys", "generate", "alice", "--backend", "pkcs11", "--pin-file", hsm_env)
    notes = created.err.splitlines()
    assert any(CAPABILITIES in line for line in notes)
    assert any("rollback anchor in token" in line for line in notes)
    listing = ok(capsys, "keys", "list", "--pin-file", hsm_env)
    assert CAPABILITIES in listing.out and "rollback anchor in token" in listing.out
    doc = json.loads(ok(capsys, "keys", "list", "--json", "--pin-file", hsm_env).out)
    assert doc["store"]["backend"] == "pkcs11" and CAPABILITIES in doc["store"]["token"]
    protection = doc["store"]["rollback_protection"]
    assert protection.startswith(f"rollback anchor in token {softhsm.token!r}")


def test_a_rolled_back_folder_is_refused_until_reset(
    capsys: pytest.CaptureFixture[str], hsm_env: Path, tmp_path: Path
) -> None:
    ok(capsys, "keys", "generate", "alice", "--backend", "pkcs11", "--pin-file", hsm_env)
    keys, state = tmp_path / "home" / "keys", tmp_path / "export.state"
    ok(capsys, "audit", "export", "--state", state, "--pin-file", hsm_env)
    saved = state.read_bytes()
    shutil.copytree(keys, tmp_path / "backup")
    ok(capsys, "keys", "rotate", "alice", "--pin-file", hsm_env)
    ok(capsys, "recipients", "add", "eve", _public_key_text(), "--pin-file", hsm_env)
    shutil.rmtree(keys)
    shutil.copytree(tmp_path / "backup", keys)
    refused = run(capsys, "keys", "list", "--pin-file", hsm_env)
    line = refused.error_line()
    assert "older than its rollback anchor" in line and "generation 4" in line
    assert "'pqselfenc keys anchor' shows the anchor" in refused.err
    verify = run(capsys, "audit", "verify", "--json", "--pin-file", hsm_env)
    assert "(rolled-back)" in verify.error_line()
    assert json.loads(verify.out)["problem"] == "rolled-back"
    for since in (("--state", state), ("--since", "0")):  # the SIEM timer sees it too
        export = run(capsys, "audit", "export", *since, "--json", "--pin-file", hsm_env)
        assert "older than its rollback anchor" in export.error_line() and export.out == ""
        assert state.read_bytes() == saved
    unconfirmed = run(capsys, "keys", "anchor", "--reset", "--pin-file", hsm_env)
    assert "accepts the key store folder as it is now" in unconfirmed.error_line()
    reset = ok(capsys, "keys", "anchor", "--reset", "--yes", "--pin-file", hsm_env)
    assert "rollback anchor reset" in reset.out
    listing = ok(capsys, "keys", "list", "--pin-file", hsm_env)
    assert "alice v1 active" in listing.out and "v2" not in listing.out
    events = json.loads(ok(capsys, "audit", "show", "--json").out)["events"]
    reset_event = next(e for e in events if e["action"] == "anchor-reset")
    assert reset_event["detail"].startswith("anchor was generation 4")
    assert "audit log ok" in ok(capsys, "audit", "verify", "--pin-file", hsm_env).out
    shipped = ok(capsys, "audit", "export", "--state", state, "--pin-file", hsm_env).out
    assert '"action":"anchor-reset"' in shipped


_PLANT_KEY = """
import os, sys, pkcs11
from pkcs11 import Attribute as A
tok = pkcs11.lib(os.environ["PQSELFENC_PKCS11_MODULE"]).get_token(
    token_label=os.environ["PQSELFENC_PKCS11_TOKEN"])
private = sys.argv[2] == "private"
with tok.open(rw=True, user_pin=os.environ["PQSELFENC_PKCS11_PIN"] if private else None) as s:
    s.generate_key(pkcs11.KeyType.AES, 256, label=sys.argv[1], id=os.urandom(16), store=True,
                   template={A.TOKEN: True, A.PRIVATE: private, A.EXTRACTABLE: not private,
                             A.SENSITIVE: private})
"""


def test_keys_under_the_store_label(capsys: pytest.CaptureFixture[str], hsm_env: Path,
                                    tmp_path: Path, softhsm: SoftHsm) -> None:  # fmt: skip
    """A public key planted without the PIN under the store's label changes nothing; a second
    private one (made with the PIN) stops every command with a hint about the token's objects,
    not about chunk stores."""
    ok(capsys, "keys", "generate", "alice", "--backend", "pkcs11", "--pin-file", hsm_env)
    meta = json.loads((tmp_path / "home" / "keys" / "keystore.json").read_text())
    label, env = meta["pkcs11"]["key_label"], softhsm.env()
    public = {k: v for k, v in env.items() if k != "PQSELFENC_PKCS11_PIN"}
    planter = [sys.executable, "-c", _PLANT_KEY, label]
    assert subprocess.run([*planter, "public"], env=public, check=False).returncode == 0
    assert "alice v1 active" in ok(capsys, "keys", "list", "--pin-file", hsm_env).out
    assert "audit log ok" in ok(capsys, "audit", "verify", "--pin-file", hsm_env).out
    assert subprocess.run([*planter, "private"], env=env, check=False).returncode == 0
    refused = run(capsys, "keys", "list", "--pin-file", hsm_env)
    assert "several private keys" in refused.error_line()
    assert "pkcs11-tool --list-objects" in refused.err and "store verify" not in refused.err


def _public_key_text() -> str:
    from pqselfenc.kem import generate_identity

    return str(generate_identity("x-wing").recipient())


def test_keys_anchor_on_the_file_backend(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PQSELFENC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PQSELFENC_PASSPHRASE", "gravel orbit candle mosaic tundra")
    created = ok(capsys, "keys", "generate", "alice", "--backend", "file")
    warnings = [x for x in created.err.splitlines() if "warning:" in x]
    assert len(warnings) == 1 and "no rollback anchor" in warnings[0]
    assert "no rollback anchor" in ok(capsys, "keys", "anchor").out
    refused = run(capsys, "keys", "anchor", "--reset", "--yes")
    assert "keeps no rollback anchor" in refused.error_line()


@pytest.mark.keyring
@needs_secret_service
def test_keys_anchor_on_the_keyring(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch,
                                    secret_service: OwnCollection) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PQSELFENC_HOME", str(tmp_path / "home"))
    created = ok(capsys, "keys", "generate", "alice", "--backend", "keyring")
    assert "rollback anchor in the OS keyring (service 'pqselfenc-anchor'" in created.err
    shutil.copytree(tmp_path / "home" / "keys", tmp_path / "backup")
    ok(capsys, "keys", "rotate", "alice")
    shutil.rmtree(tmp_path / "home" / "keys")
    shutil.copytree(tmp_path / "backup", tmp_path / "home" / "keys")
    assert "older than its rollback anchor" in run(capsys, "keys", "list").error_line()
    ok(capsys, "keys", "anchor", "--reset", "--yes")
    assert "generation 3" in ok(capsys, "keys", "anchor").out


def test_no_session_is_left_open_by_a_failing_command(
    capsys: pytest.CaptureFixture[str], hsm_env: Path, tmp_path: Path
) -> None:
    ok(capsys, "keys", "generate", "alice", "--backend", "pkcs11", "--pin-file", hsm_env)
    keys = tmp_path / "home" / "keys"
    meta = json.loads((keys / "keystore.json").read_text())
    with pb.Pkcs11Backend.open(keys, meta["store_id"], pin=hsm_env.read_text().strip(),
                               key_id=bytes.fromhex(meta["pkcs11"]["key_id"])) as backend:
        backend.delete_anchor()
    gone = run(capsys, "keys", "list", "--pin-file", hsm_env)
    assert "keeps a rollback anchor in token" in gone.error_line()  # and the fixture checks
