"""Escrow (issue 15, item 3): every map a store seals also goes to each escrow recipient, on every
path that seals (the library's seal and rewrap, ``encrypt --to``, ``encrypt --scheduler``,
``rewrap``), or it is not sealed at all and the refusal is audited. The policy kept in
keystore.json is MACed and bound to its audited commit; ``KeyConfig.escrow`` adds to it.
"""

from __future__ import annotations

import ast
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from _cli_helpers import Result, run
from _keys_support import PASSPHRASE, StoreFactory, small_map

from pqselfenc.core.files import encrypt_file
from pqselfenc.error import (
    DecryptionError,
    EscrowError,
    IntegrityError,
    InvalidDataError,
    KeyNotFound,
    KeyStoreError,
)
from pqselfenc.kem import generate_identity, inspect, open_sealed
from pqselfenc.keys import KeyStore

ROOT = Path(__file__).resolve().parent.parent
FAIL_KEYRING = "keyring.backends.fail.Keyring"


def _events(ks: KeyStore, action: str) -> list[dict[str, Any]]:
    return [e for e in ks.audit.events() if e["action"] == action]


def _with_org(ks: KeyStore, suite: str = "x-wing") -> Any:
    """An organisation's break-glass identity (held elsewhere), added as recipient ``org`` and
    put in the store's escrow policy."""
    org = generate_identity(suite)
    ks.recipients.add("org", str(org.recipient()))
    ks.escrow.add("org")
    return org


# -- the library -------------------------------------------------------------------------------


def test_every_map_the_store_seals_also_goes_to_escrow(open_store: StoreFactory) -> None:
    ks = open_store()
    ks.generate("alice")
    org = _with_org(ks)
    data_map = small_map()
    sealed = ks.seal(data_map, ["alice"], sign_as="alice")
    assert open_sealed(sealed, [org]) == data_map  # the break-glass key opens it
    assert ks.open_envelope(sealed) == data_map
    seal = _events(ks, "seal")[-1]
    org_id = ks.recipients.get("org").key_id
    assert seal["name"] == "alice,org" and seal["escrow"] == org_id
    assert org_id in seal["key_id"].split(",")
    assert {k.hex() for k in inspect(sealed).recipients} == set(seal["key_id"].split(","))
    assert ks.audit.verify().ok


def test_keyconfig_escrow_is_added_to_the_stores_own(
    open_store: StoreFactory, tmp_path: Path
) -> None:
    ks = open_store()
    ks.generate("alice")
    org = _with_org(ks)
    other = generate_identity("x-wing")
    ks.recipients.add("auditor", str(other.recipient()))
    ks.close()
    both = open_store(escrow=["auditor"])
    assert list(both.escrow) == ["auditor", "org"] and both.escrow.stored == ("org",)
    sealed = both.seal(small_map(), ["alice"])
    assert open_sealed(sealed, [org]) == open_sealed(sealed, [other]) == small_map()
    with pytest.raises(KeyNotFound, match=r"KeyConfig\.escrow"):  # a program adds, never removes
        both.escrow.remove("auditor")
    plain = open_store()  # without the program's KeyConfig: the store's policy alone
    assert len(inspect(plain.seal(small_map(), ["alice"])).recipients) == 2


def test_rewrap_adds_escrow_to_a_map_sealed_before(open_store: StoreFactory) -> None:
    ks = open_store()
    ks.generate("alice")
    older = ks.seal(small_map(), ["alice"])
    org = _with_org(ks)
    with pytest.raises(DecryptionError):
        open_sealed(older, [org])  # an escrow change does nothing to maps already sealed
    rewrapped = ks.rewrap(older)
    assert open_sealed(rewrapped, [org]) == small_map()
    assert _events(ks, "seal")[-1]["escrow"] == ks.recipients.get("org").key_id


def test_escrow_key_rotation_replaces_and_rewrap_moves_maps(open_store: StoreFactory) -> None:
    """The recovery procedure's rotation: replace the escrow recipient's key under the same
    name (its old key id is kept, so rewrap recognises it), then rewrap."""
    ks = open_store()
    ks.generate("alice")
    old = _with_org(ks)
    sealed = ks.seal(small_map(), ["alice"])
    new = generate_identity("x-wing")
    ks.recipients.add("org", str(new.recipient()), replace_existing=True)
    rewrapped = ks.rewrap(sealed)
    assert open_sealed(rewrapped, [new]) == small_map()
    assert new.recipient().key_id in inspect(rewrapped).recipients
    assert old.recipient().key_id not in inspect(rewrapped).recipients


# -- refusals ----------------------------------------------------------------------------------


def _refused(ks: KeyStore, match: str, to: list[str] | None = None) -> None:
    """A seal to ``to`` is refused with EscrowError, nothing sealed, and the refusal audited."""
    before = len(list(ks.audit.events()))
    with pytest.raises(EscrowError, match=match):
        ks.seal(small_map(), to or ["alice"])
    new = list(ks.audit.events())[before:]
    assert [(e["action"], e["outcome"], e["detail"]) for e in new] == [
        ("seal", "failure", "EscrowError")
    ]
    with pytest.raises(EscrowError, match=match):
        ks.escrow.check(to or ["alice"])  # the commands' check before any work says the same
    assert ks.audit.verify().ok


def test_a_missing_escrow_recipient_refuses_the_seal(open_store: StoreFactory) -> None:
    ks = open_store(escrow=["org"])
    ks.generate("alice")
    _refused(ks, "escrow recipient 'org' is missing")
    ks.generate("org")  # a local identity is not an escrow holder's key
    _refused(ks, "'org' is a local identity, not a recipient")


def test_an_escrow_key_that_no_longer_parses_refuses_the_seal(open_store: StoreFactory) -> None:
    ks = open_store()
    ks.generate("alice")
    _with_org(ks)
    with ks._ledger.locked() as meta:  # a genuine commit of a key text this release cannot read
        entry = replace(meta.recipients["org"], public_key="pqse-pub-x-wing:AAAA")
        ks._ledger.commit(meta.with_recipients({"org": entry}), "recipient-add", "org")
    _refused(ks, "escrow recipient 'org' has a key this store cannot seal to")


def test_an_escrow_key_of_another_suite_or_below_policy_refuses(
    open_store: StoreFactory, tmp_path: Path
) -> None:
    ks = open_store()
    ks.generate("alice")
    ks.generate("cnsa", suite="ml-kem-1024", signature="ml-dsa-87")
    _with_org(ks)
    _refused(ks, "has a x-wing key, this map's recipients ml-kem-1024", to=["cnsa"])
    ks.close()
    strict = open_store(min_entropy=256)  # a policy that refuses x-wing refuses its escrow key
    _refused(strict, "cannot seal to: x-wing is 192-bit strong", to=["cnsa"])


def test_escrow_recipients_cannot_be_removed_while_in_force(open_store: StoreFactory) -> None:
    ks = open_store()
    ks.generate("alice")
    _with_org(ks)
    with pytest.raises(KeyStoreError, match="escrow recipient"):
        ks.recipients.remove("org")
    with pytest.raises(KeyStoreError, match="already"):
        ks.escrow.add("org")
    with pytest.raises(KeyStoreError, match="local identity"):
        ks.escrow.add("alice")
    with pytest.raises(KeyNotFound, match="no recipient named 'bob'"):
        ks.escrow.add("bob")
    ks.escrow.remove("org")
    ks.recipients.remove("org")
    assert len(inspect(ks.seal(small_map(), ["alice"])).recipients) == 1


# -- the stored policy: MACed, bound to its audited commit -------------------------------------


def test_escrow_changes_are_audited_commits(open_store: StoreFactory, tmp_path: Path) -> None:
    ks = open_store()
    ks.generate("alice")
    _with_org(ks)
    added = _events(ks, "escrow-add")[-1]
    assert added["key_id"] == ks.recipients.get("org").key_id
    assert {"generation", "meta_mac"} <= set(added)
    doc = json.loads((tmp_path / "ks" / "keystore.json").read_text())
    assert (doc["version"], doc["escrow"]) == (3, ["org"])  # older releases refuse version 3
    ks.escrow.remove("org")
    assert {"generation", "meta_mac"} <= set(_events(ks, "escrow-remove")[-1])
    doc = json.loads((tmp_path / "ks" / "keystore.json").read_text())
    assert doc["version"] == 2 and "escrow" not in doc
    assert ks.audit.verify().ok


@pytest.mark.parametrize("edit", ["drop", "version-2", "other-name"])
def test_a_tampered_escrow_policy_is_refused(
    open_store: StoreFactory, tmp_path: Path, edit: str
) -> None:
    ks = open_store()
    ks.generate("alice")
    _with_org(ks)
    ks.close()
    path = tmp_path / "ks" / "keystore.json"
    doc = json.loads(path.read_text())
    if edit == "drop":
        del doc["escrow"]
    elif edit == "version-2":
        del doc["escrow"]
        doc["version"] = 2
    else:
        doc["escrow"] = ["zed"]
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    with pytest.raises(IntegrityError, match="MAC"):
        ks.seal(small_map(), ["alice"])  # an open store re-reads (and checks) before each seal
    # at open, a version 3 file without escrow is malformed before its MAC is even checked
    with pytest.raises((IntegrityError, InvalidDataError), match=r"MAC|lacks 'escrow'"):
        open_store()


def test_a_rollback_to_before_escrow_add_is_refused(
    open_store: StoreFactory, tmp_path: Path
) -> None:
    ks = open_store()
    ks.generate("alice")
    ks.recipients.add("org", str(generate_identity("x-wing").recipient()))
    before = (tmp_path / "ks" / "keystore.json").read_bytes()  # genuine, validly MACed
    ks.escrow.add("org")
    ks.close()
    (tmp_path / "ks" / "keystore.json").write_bytes(before)
    with pytest.raises(IntegrityError, match="older than generation"):
        open_store()


# -- no path seals around the plan ---------------------------------------------------------------


def _kem_seal_uses(path: Path) -> list[str]:
    """Where ``path`` refers to ``pqselfenc.kem``'s ``seal`` (by name or as ``kem.seal``): the
    qualified name of the enclosing function of each use."""
    tree = ast.parse(path.read_text(), str(path))
    names, modules = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pqselfenc.kem"):
            names |= {a.asname or a.name for a in node.names if a.name == "seal"}
        if isinstance(node, ast.ImportFrom) and node.module == "pqselfenc":
            modules |= {a.asname or a.name for a in node.names if a.name == "kem"}
        if isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name == "pqselfenc.kem"}
    found: list[str] = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = where
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                inner = f"{where}.{child.name}" if where else child.name
            is_name = isinstance(child, ast.Name) and child.id in names
            is_attr = (isinstance(child, ast.Attribute) and child.attr == "seal"
                       and ast.unparse(child.value) in modules | {"pqselfenc.kem"})  # fmt: skip
            if is_name or is_attr:
                found.append(inner or "<module>")
            visit(child, inner)

    visit(tree, "")
    return found


def test_no_sealing_path_bypasses_the_escrow_plan() -> None:
    """The only use of ``kem.seal`` in the package outside kem itself is ``Envelopes.seal``, and
    it seals exactly the plan's keys: a new path that seals any other way fails here."""
    uses = {}
    for path in sorted((ROOT / "pqselfenc").rglob("*.py")):
        relative = path.relative_to(ROOT / "pqselfenc").as_posix()
        if not relative.startswith("kem/"):
            uses[relative] = _kem_seal_uses(path)
    assert {k: v for k, v in uses.items() if v} == {"keys/_envelopes.py": ["Envelopes.seal"]}
    source = (ROOT / "pqselfenc" / "keys" / "_envelopes.py").read_text()
    method = source[source.index("    def seal(") : source.index("    def open(")]
    assert "plan = plan_seal(meta, self._config, to)" in method
    assert "seal(data_map, plan.keys, signer)" in method


def test_the_detector_sees_a_bypass(tmp_path: Path) -> None:
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text(
        "from pqselfenc import kem\nfrom pqselfenc.kem import seal as s\n"
        "def f(m, k):\n    return kem.seal(m, k)\nclass C:\n    def g(self, m, k):\n"
        "        return s(m, k)\n"
    )
    assert _kem_seal_uses(sneaky) == ["f", "C.g"]


# -- the command -------------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Alice's home (file backend), Bob's and the organisation's; org is Alice's escrow."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PQSELFENC_HOME", str(tmp_path / "alice"))
    monkeypatch.setenv("PQSELFENC_STORE", str(tmp_path / "chunks"))
    monkeypatch.setenv("PQSELFENC_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", FAIL_KEYRING)
    return tmp_path


def ok(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Result:
    result = run(capsys, *argv)
    assert result.code == 0, result.err
    return result


def _setup(capsys: pytest.CaptureFixture[str]) -> None:
    for who in ("bob", "org"):
        ok(capsys, "keys", "generate", who, "--home", who)
        ok(capsys, "keys", "export", who, "--public", "--home", who, "--out", f"{who}.pub")
        ok(capsys, "recipients", "add", who, f"{who}.pub")
    ok(capsys, "keys", "generate", "alice")
    added = ok(capsys, "recipients", "escrow", "add", "org")
    assert "pqselfenc rewrap" in added.out


def _org_opens(capsys: pytest.CaptureFixture[str], map_file: str, data: bytes) -> None:
    ok(capsys, "decrypt", map_file, "--home", "org", "--out", f"{map_file}.org")
    assert Path(f"{map_file}.org").read_bytes() == data


def test_cli_encrypt_seals_to_escrow_without_a_flag(
    capsys: pytest.CaptureFixture[str], cli: Path
) -> None:
    _setup(capsys)
    listed = json.loads(ok(capsys, "recipients", "escrow", "list", "--json").out)
    assert [d["name"] for d in listed["escrow"]] == ["org"]
    data = os.urandom(3000)
    Path("f").write_bytes(data)
    done = ok(capsys, "encrypt", "f", "--to", "bob", "--out", "f.map")
    assert "sealed for bob; escrow: org" in done.out
    _org_opens(capsys, "f.map", data)
    ok(capsys, "decrypt", "f.map", "--home", "bob", "--out", "f.bob")
    as_json = json.loads(ok(capsys, "encrypt", "f", "--to", "bob", "--out", "g.map", "--json").out)
    assert as_json["encrypted"][0]["escrow"] == ["org"]
    warned = ok(capsys, "encrypt", "f", "--to", "bob", "--out", "h.map", "--private-dedup")
    assert "can open the sealed maps but not decrypt this content" in warned.err


def test_cli_rewrap_adds_escrow(capsys: pytest.CaptureFixture[str], cli: Path) -> None:
    ok(capsys, "keys", "generate", "org", "--home", "org")
    ok(capsys, "keys", "export", "org", "--public", "--home", "org", "--out", "org.pub")
    ok(capsys, "keys", "generate", "alice")
    data = os.urandom(3000)
    Path("f").write_bytes(data)
    ok(capsys, "encrypt", "f", "--to", "alice", "--out", "f.map")
    ok(capsys, "recipients", "add", "org", "org.pub")
    ok(capsys, "recipients", "escrow", "add", "org")
    refused = run(capsys, "decrypt", "f.map", "--home", "org", "--out", "x")
    assert refused.code == 1  # sealed before escrow: the escrow change did not touch it
    ok(capsys, "rewrap", "f.map")
    _org_opens(capsys, "f.map", data)


def _break_escrow(cli: Path) -> None:
    """Leave org in the escrow policy but not in the recipients (a genuine, audited commit)."""
    store = KeyStore.open(cli / "alice" / "keys", passphrase=PASSPHRASE)
    with store, store._ledger.locked() as meta:
        rest = {n: r for n, r in meta.recipients.items() if n != "org"}
        store._ledger.commit(meta.with_recipients(rest), "recipient-remove", "org")


def test_cli_refuses_to_seal_without_escrow_before_any_work(
    capsys: pytest.CaptureFixture[str], cli: Path
) -> None:
    _setup(capsys)
    _break_escrow(cli)
    Path("f").write_bytes(os.urandom(3000))
    refused = run(capsys, "encrypt", "f", "--to", "bob", "--out", "f.map")
    assert refused.error_line().startswith("escrow recipient 'org' is missing")
    assert "recipients escrow list" in refused.err
    assert not Path("f.map").exists() and not (cli / "chunks").exists()
    listed = ok(capsys, "recipients", "escrow", "list")
    assert "org: MISSING" in listed.out
    with KeyStore.open(cli / "alice" / "keys", passphrase=PASSPHRASE) as ks:
        last = [e for e in ks.audit.events() if e["action"] == "seal"][-1]
        assert (last["outcome"], last["detail"], last["name"]) == ("failure", "EscrowError", "bob")
    ok(capsys, "recipients", "escrow", "remove", "org")
    ok(capsys, "encrypt", "f", "--to", "bob", "--out", "f.map")


def test_cli_scheduler_path_seals_to_escrow(
    capsys: pytest.CaptureFixture[str], cli: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``encrypt --scheduler`` with a mocked cluster: the maps it writes are sealed to escrow,
    and a broken policy is refused before the cluster is asked to do anything."""
    from pqselfenc import distributed
    from pqselfenc.cli import _distributed
    from pqselfenc.core.stores.directory import DirectoryChunkStore

    asked: list[list[str]] = []

    def encrypt_many(client: object, sources: list[str], store: str, config: Any) -> list[Any]:
        asked.append(list(sources))
        return [encrypt_file(Path(s), DirectoryChunkStore(store), config) for s in sources]

    monkeypatch.setattr(_distributed, "_connect", lambda session: object())
    monkeypatch.setattr(distributed, "encrypt_many", encrypt_many)
    _setup(capsys)
    data = os.urandom(3000)
    Path("f").write_bytes(data)
    done = ok(capsys, "encrypt", "--scheduler", "tcp://127.0.0.1:1", "f", "--to", "bob",
              "--out", "f.map")  # fmt: skip
    assert asked == [["f"]] and "escrow: org" in done.out
    _org_opens(capsys, "f.map", data)
    _break_escrow(cli)
    refused = run(capsys, "encrypt", "--scheduler", "tcp://127.0.0.1:1", "f", "--to", "bob",
                  "--out", "g.map")  # fmt: skip
    assert refused.error_line().startswith("escrow recipient 'org' is missing")
    assert asked == [["f"]] and not Path("g.map").exists()
