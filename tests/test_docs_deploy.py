"""docs/deploy.md and contrib/systemd/ (issue 15, item 5).

Every command block of deploy.md is marked: ``test`` blocks run here verbatim, in order, as the
service user would run them (with the paths block's variables pointing at temp folders); ``hsm``
blocks run against a fresh SoftHSM token (a failure, not a skip, under CI's
``PQSELFENC_REQUIRE_HSM=1``); ``not run`` blocks need root
or a running systemd. The unit files are checked by ``systemd-analyze verify`` where it exists
and, everywhere, by a strict parser of our own that also parses their command lines with the
command's real argument parser.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from _cli_helpers import clean_env
from _keys_support import PASSPHRASE, FakeClock

from pqselfenc.cli import build_parser
from pqselfenc.keys import KeyStore

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "docs" / "deploy.md"
UNITS = ROOT / "contrib" / "systemd"
BINARY = "/usr/local/bin/pqselfenc"
FAIL_KEYRING = "keyring.backends.fail.Keyring"
MARKED = re.compile(
    r"<!-- (?P<kind>test|hsm|not run): (?P<name>[^>]*?) -->\n```(?P<lang>sh|python)\n"
    r"(?P<body>.*?)```",
    re.DOTALL,
)
FENCE = re.compile(r"^```(sh|python)$", re.MULTILINE)


@dataclass(frozen=True)
class Block:
    kind: str
    name: str
    lang: str
    body: str


def blocks() -> list[Block]:
    return [Block(**m.groupdict()) for m in MARKED.finditer(DEPLOY.read_text())]


def block(name: str) -> Block:
    found = [b for b in blocks() if b.name == name]
    assert len(found) == 1, f"deploy.md has no single block {name!r}"
    return found[0]


def test_every_command_block_is_marked() -> None:
    text = DEPLOY.read_text()
    assert len(FENCE.findall(text)) == len(blocks())
    kinds = [b.kind for b in blocks()]
    assert kinds.count("test") >= 8 and kinds.count("hsm") >= 3
    names = [b.name for b in blocks() if b.kind != "not run"]
    assert len(names) == len(set(names))


# -- the paths the guide and the units agree on --------------------------------------------------


def paths() -> dict[str, str]:
    body = block("sets the system paths; the test sets these variables to temp folders").body
    return dict(re.findall(r"([A-Z_]+)=(\S+)", body))


def test_the_paths_block_is_what_the_units_use() -> None:
    values = paths()
    assert values == {
        "PQSELFENC_HOME": "/var/lib/pqselfenc", "ETC": "/etc/pqselfenc",
        "LOGS": "/var/log/pqselfenc", "UNLOCK_OPTION": "--passphrase-file",
    }  # fmt: skip
    for name in ("pqselfenc-rotate.service", "pqselfenc-audit-export.service"):
        unit = parse_unit(UNITS / name)
        service = unit.get("Service")
        assert f"PQSELFENC_HOME={values['PQSELFENC_HOME']}" in service["Environment"]
        assert f"UNLOCK_OPTION={values['UNLOCK_OPTION']}" in service["Environment"]
        assert service["EnvironmentFile"] == [f"-{values['ETC']}/pqselfenc.env"]
        assert f"{values['ETC']}/secret" in service["ExecStart"][0]
        assert values["PQSELFENC_HOME"] in service["ReadWritePaths"][0].split()
    export = parse_unit(UNITS / "pqselfenc-audit-export.service").get("Service")
    assert export["StandardOutput"] == [f"append:{values['LOGS']}/audit.jsonl"]
    assert f"--state {values['PQSELFENC_HOME']}/audit-export.state" in export["ExecStart"][0]


# -- a strict parser for the unit files ---------------------------------------------------------

_COMMON_SERVICE = {
    "Type", "User", "Group", "Environment", "EnvironmentFile", "ExecStart", "UMask",
    "StateDirectory", "StateDirectoryMode", "LogsDirectory", "LogsDirectoryMode",
    "ReadWritePaths", "StandardOutput", "NoNewPrivileges", "ProtectSystem", "ProtectHome",
    "PrivateTmp", "PrivateDevices", "PrivateNetwork", "ProtectKernelTunables",
    "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock",
    "ProtectHostname", "ProtectProc", "ProcSubset", "RestrictAddressFamilies",
    "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality",
    "RemoveIPC", "CapabilityBoundingSet", "AmbientCapabilities", "SystemCallArchitectures",
    "SystemCallFilter", "SystemCallErrorNumber", "SupplementaryGroups", "DeviceAllow",
    "BindReadOnlyPaths",
}  # fmt: skip
KEYS = {
    "service": {"Unit": {"Description", "After"}, "Service": _COMMON_SERVICE},
    "timer": {"Unit": {"Description"}, "Install": {"WantedBy"},
              "Timer": {"OnCalendar", "Persistent", "RandomizedDelaySec", "AccuracySec"}},
    "conf": {"Service": _COMMON_SERVICE},
}  # fmt: skip
BOOLEANS = {"NoNewPrivileges", "PrivateTmp", "PrivateDevices", "PrivateNetwork", "Persistent",
            "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectClock",
            "ProtectControlGroups", "ProtectHostname", "RestrictNamespaces", "RestrictRealtime",
            "RestrictSUIDSGID", "LockPersonality", "RemoveIPC", "ProtectHome"}  # fmt: skip
PATH_LISTS = {"ReadWritePaths", "BindReadOnlyPaths"}


class UnitError(Exception):
    pass


@dataclass
class Unit:
    sections: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def get(self, section: str) -> dict[str, list[str]]:
        return self.sections[section]


def parse_unit(path: Path, text: str | None = None) -> Unit:
    """The unit file at ``path`` (or ``text`` as if it were there), read strictly: known
    sections of its type, each once; known keys; ``Key=Value`` lines only (no continuation);
    values of the kinds the keys take. ``UnitError`` names the line of the first problem."""
    kind = path.suffix.lstrip(".")
    allowed = KEYS[kind]
    unit, section = Unit(), None
    for number, line in enumerate((text if text is not None else path.read_text()).split("\n"), 1):
        where = f"{path.name}:{number}"
        if not line.strip() or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            name = line.strip()[1:-1] if line.strip().endswith("]") else ""
            if name not in allowed or name in unit.sections:
                raise UnitError(f"{where}: section [{name}] unknown here or repeated")
            section = unit.sections[name] = {}
            continue
        key, sep, value = line.partition("=")
        if section is None or not sep or key != key.strip() or line.endswith("\\"):
            raise UnitError(f"{where}: not a Key=Value line of a section")
        current = next(n for n, s in unit.sections.items() if s is section)
        if key not in allowed[current]:
            raise UnitError(f"{where}: unknown key {key} in [{current}]")
        _check_value(key, value, where)
        section.setdefault(key, []).append(value)
    missing = set(allowed) - set(unit.sections) - ({"Unit"} if kind == "conf" else set())
    if missing:
        raise UnitError(f"{path.name}: missing sections {sorted(missing)}")
    return unit


def _check_value(key: str, value: str, where: str) -> None:
    if key in BOOLEANS and value not in ("yes", "no", "true", "false"):
        raise UnitError(f"{where}: {key} takes yes or no")
    if key in PATH_LISTS and not all(p.lstrip("-").startswith("/") for p in value.split()):
        raise UnitError(f"{where}: {key} takes absolute paths")
    if key == "ExecStart" and value and not value.startswith("/"):
        raise UnitError(f"{where}: ExecStart needs an absolute program path")
    if key in ("StateDirectory", "LogsDirectory") and value.startswith("/"):
        raise UnitError(f"{where}: {key} is relative to /var/lib or /var/log")
    if (key.endswith("Mode") or key == "UMask") and not re.fullmatch(r"0[0-7]{3}", value):
        raise UnitError(f"{where}: {key} takes an octal mode")


def unit_files() -> list[Path]:
    return sorted(p for p in UNITS.iterdir() if p.suffix in (".service", ".timer", ".conf"))


def test_contrib_ships_the_units() -> None:
    assert [p.name for p in unit_files()] == [
        "pkcs11.conf", "pqselfenc-audit-export.service", "pqselfenc-audit-export.timer",
        "pqselfenc-rotate.service", "pqselfenc-rotate.timer",
    ]  # fmt: skip


@pytest.mark.parametrize("path", unit_files(), ids=lambda p: p.name)
def test_units_pass_the_strict_parser(path: Path) -> None:
    unit = parse_unit(path)
    if path.suffix == ".timer":
        assert (UNITS / path.with_suffix(".service").name).is_file()
        assert unit.get("Install")["WantedBy"] == ["timers.target"]
    if path.suffix == ".service":
        service = unit.get("Service")
        assert service["Type"] == ["oneshot"] and service["User"] == ["pqselfenc"]
        for key, value in {"ProtectSystem": "strict", "PrivateTmp": "yes", "UMask": "0077",
                           "NoNewPrivileges": "yes", "ProtectHome": "yes"}.items():  # fmt: skip
            assert service[key] == [value], key
        assert service["CapabilityBoundingSet"] == [""]


def _words(exec_start: str, unlock: str) -> list[str]:
    words = shlex.split(exec_start.replace("${UNLOCK_OPTION}", unlock))
    assert words[0] == BINARY
    return words[1:]


def _has_option(option: str) -> bool:
    return option in build_parser("keys").format_help() + _subhelp("keys", "rotate")


def _subhelp(*words: str) -> str:
    parser = build_parser(words[0])
    action = next(a for a in parser._actions if a.dest == "command")
    sub = action.choices[words[0]]  # type: ignore[index]
    inner = next(a for a in sub._actions if getattr(a, "choices", None))
    return str(inner.choices[words[1]].format_help())  # type: ignore[index]


@pytest.mark.parametrize("name", ["pqselfenc-rotate.service", "pqselfenc-audit-export.service"])
def test_the_units_command_lines_parse_as_the_command_reads_them(name: str) -> None:
    """The command line each service runs, with ``${UNLOCK_OPTION}`` as the file backend sets it
    (and as the token sets it, once ``--pin-file`` exists), is accepted by pqselfenc's parser."""
    exec_start = parse_unit(UNITS / name).get("Service")["ExecStart"][0]
    options = ["--passphrase-file"] + (["--pin-file"] if _has_option("--pin-file") else [])
    for unlock in options:
        words = _words(exec_start, unlock)
        args = build_parser(words[0]).parse_args(words)
        assert getattr(args, unlock.lstrip("-").replace("-", "_")) == "/etc/pqselfenc/secret"
    if "rotate" in words:
        assert args.due is True
    else:
        assert str(args.state) == "/var/lib/pqselfenc/audit-export.state" and args.quiet


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[Unit]\nDescription=x\n[Service]\nExecStrat=/bin/true\n", "unknown key ExecStrat"),
        ("[Unit]\nDescription=x\n[Servce]\n", "section [Servce]"),
        ("[Unit]\nDescription=x\n[Service]\n[Service]\n", "repeated"),
        ("[Unit]\nDescription=x\n[Service]\nPrivateTmp=maybe\n", "yes or no"),
        ("[Unit]\nDescription=x\n[Service]\nExecStart=pqselfenc\n", "absolute program"),
        ("[Unit]\nDescription=x\n[Service]\nReadWritePaths=var/lib\n", "absolute paths"),
        ("[Unit]\nDescription=x\n[Service]\nUMask=77\n", "octal"),
        ("[Unit]\nDescription=x\n[Service]\nExecStart=/bin/a \\\n", "Key=Value"),
        ("Description=x\n", "Key=Value"),
        ("[Unit]\nDescription=x\n", "missing sections"),
    ],
)
def test_the_strict_parser_sees_mistakes(text: str, problem: str) -> None:
    with pytest.raises(UnitError, match=re.escape(problem)):
        parse_unit(Path("probe.service"), text)


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.parametrize("with_dropin", [False, True], ids=["file", "pkcs11-dropin"])
def test_units_verify_with_systemd_analyze(tmp_path: Path, with_dropin: bool) -> None:
    """``systemd-analyze verify`` on copies of the units whose program path names a stand-in
    (it checks that the program exists; the real one is installed at /usr/local/bin by the
    guide's install step); with the pkcs11 drop-in in place for both services. Any warning
    fails: systemd only warns (exit 0) about an unknown key."""
    stand_in = tmp_path / "bin" / "pqselfenc"
    stand_in.parent.mkdir()
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    for path in unit_files():
        if path.suffix != ".conf":
            (units / path.name).write_text(path.read_text().replace(BINARY, str(stand_in)))
    if with_dropin:
        for service in ("pqselfenc-rotate.service", "pqselfenc-audit-export.service"):
            (units / f"{service}.d").mkdir()
            shutil.copy(UNITS / "pkcs11.conf", units / f"{service}.d" / "pkcs11.conf")
    assert SYSTEMD_ANALYZE is not None
    files = sorted(str(p) for p in units.iterdir() if p.is_file())  # the drop-ins come along
    done = subprocess.run([SYSTEMD_ANALYZE, "verify", *files], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr
    assert done.stdout.strip() == "", done.stdout


# -- the blocks, run as the service user would run them -----------------------------------------


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    home, etc, logs = tmp_path / "home", tmp_path / "etc", tmp_path / "logs"
    for folder in (home, etc, logs):
        folder.mkdir(mode=0o700)
    env = clean_env(tmp_path / "user", PQSELFENC_HOME=str(home), ETC=str(etc), LOGS=str(logs),
                    UNLOCK_OPTION="--passphrase-file",
                    PYTHON_KEYRING_BACKEND=FAIL_KEYRING)  # fmt: skip
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    (tmp_path / "work").mkdir()
    return env


def _run(name: str, env: dict[str, str], cwd: Path, *, ok: bool = True) -> str:
    """Block ``name`` verbatim: an ``sh`` block in bash -euo pipefail, a python block in a
    fresh interpreter; its stdout (stderr too when it fails)."""
    b = block(name)
    argv = ["bash", "-euo", "pipefail", "-c", b.body] if b.lang == "sh" else [
        sys.executable, "-c", b.body]  # fmt: skip
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False)  # fmt: skip
    if ok:
        assert done.returncode == 0, f"{name}: {done.stderr}"
    return done.stdout + ("" if ok else done.stderr)


def _pq(env: dict[str, str], cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    secret = str(Path(env["ETC"]) / "secret")
    return subprocess.run([sys.executable, "-m", "pqselfenc.cli", *argv, env["UNLOCK_OPTION"],
                           secret], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip


def _escrow_key(env: dict[str, str], cwd: Path) -> None:
    """The organisation's side: its escrow key, in a home of its own; the public text is
    handed over as $ETC/org-escrow.pub (what section 5 starts from)."""
    org = dict(env, PQSELFENC_HOME=str(cwd / "org-home"), PQSELFENC_PASSPHRASE=PASSPHRASE)
    for argv in (["keys", "generate", "org-escrow", "--backend", "file"],
                 ["keys", "export", "org-escrow", "--public", "--out",
                  str(Path(env["ETC"]) / "org-escrow.pub")]):  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "pqselfenc.cli", *argv], env=org, cwd=cwd,
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr


def _records(env: dict[str, str]) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (Path(env["LOGS"]) / "audit.jsonl").read_text().splitlines()]


def _ship_and_check(env: dict[str, str], work: Path) -> None:
    _run("export", env, work)
    out = _run("siem-check", dict(env, AUDIT_EXPORT=str(Path(env["LOGS"]) / "audit.jsonl")), work)
    assert out.startswith("continuous up to seq ")
    assert int(out.split()[-1]) == _records(env)[-1]["seq"]


def _versions(env: dict[str, str], work: Path) -> list[int]:
    listed = _pq(env, work, "keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return [v["version"] for v in json.loads(listed.stdout)["identities"][0]["versions"]]


def _backup_rotate_restore(env: dict[str, str], work: Path, restore: str) -> None:
    """Back up, change the store (a rotation, exported), restore the backup: the rotation is
    gone, and the old export state would refuse to go on (moved aside by the block)."""
    backed_up = _versions(env, work)
    _run("backup", env, work)
    assert len(list(work.glob("keys-*.tar.gz"))) == 1
    assert _pq(env, work, "keys", "rotate", "server").returncode == 0
    _run("export", env, work)
    shipped = _records(env)[-1]["seq"]
    _run(restore, env, work)
    assert _versions(env, work) == backed_up  # the rotation after the backup is gone
    state = Path(env["PQSELFENC_HOME"]) / "audit-export.state.before-restore"
    stale = _pq(env, work, "audit", "export", "--state", str(state))
    assert stale.returncode == 1 and re.search(r"\((truncated|continuity)\)", stale.stderr)
    fresh = _pq(env, work, "audit", "export")
    assert fresh.returncode == 0 and len(fresh.stdout.splitlines()) < shipped + 5


def test_the_file_backend_blocks_run_as_written(tmp_path: Path) -> None:
    env, work = _env(tmp_path), tmp_path / "work"
    listed = _run("store-file", env, work)
    assert "server v1 active" in listed
    assert oct(os.stat(Path(env["ETC"]) / "secret").st_mode & 0o777) == "0o600"
    _escrow_key(env, work)
    assert "org-escrow: x-wing, fingerprint" in _run("escrow", env, work)
    assert _run("rotate-due", env, work).strip() == "no identity is due for rotation"
    _ship_and_check(env, work)
    assert _pq(env, work, "keys", "rotate", "server").returncode == 0
    _ship_and_check(env, work)  # the second run continues the first: one chain in one file
    assert _run("verify-json", env, work).split()[0] == "True"
    _backup_rotate_restore(env, work, "restore")


def test_rotate_due_prints_what_it_rotated(tmp_path: Path) -> None:
    """What the timer's service prints when a key is due (the store made 100 days ago)."""
    env, work = _env(tmp_path), tmp_path / "work"
    secret = Path(env["ETC"]) / "secret"
    secret.write_text(PASSPHRASE + "\n")
    secret.chmod(0o600)
    clock = FakeClock()
    store = KeyStore.open(Path(env["PQSELFENC_HOME"]) / "keys", passphrase=PASSPHRASE,
                          clock=lambda: clock.now - timedelta(days=100))  # fmt: skip
    store.generate("server")
    store.close()
    out = _run("rotate-due", env, work)
    assert re.fullmatch(r"server v2 active created \d{4}-\d\d-\d\d fingerprint \S+\n", out), out
    assert _run("rotate-due", env, work).strip() == "no identity is due for rotation"


# -- the HSM blocks -------------------------------------------------------------------------------


def test_the_hsm_blocks_run_against_softhsm(tmp_path: Path) -> None:
    from _softhsm import missing, skip_or_fail

    reason = missing()
    if reason is not None:
        skip_or_fail(reason)  # a failure under PQSELFENC_REQUIRE_HSM=1 (CI)
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    env, work = _env(tmp_path, SOFTHSM2_CONF=str(conf)), tmp_path / "work"
    assert re.fullmatch(r"[0-9a-f]{32}\n", _run("hsm-token", env, work))  # the SO PIN, once
    assert not (Path(env["ETC"]) / "so-pin").exists()
    settings = (Path(env["ETC"]) / "pqselfenc.env").read_text().split()
    env.update(line.split("=", 1) for line in settings)  # what "set -a; . pqselfenc.env" does
    assert env["UNLOCK_OPTION"] == "--pin-file"
    assert "server v1 active" in _run("hsm-store", env, work)
    _escrow_key(env, work)
    _run("escrow", env, work)
    assert _run("rotate-due", env, work).strip() == "no identity is due for rotation"
    _ship_and_check(env, work)
    _backup_rotate_restore(env, work, "hsm-restore")
