"""A real PKCS#11 token for tests: SoftHSM 2 (Debian ``softhsm2``) in a private config dir.

The ``softhsm`` fixture (registered once, in conftest.py: a module registering its own would
make a second token set, which the PKCS#11 library, loaded once per process, never sees) writes a
``softhsm2.conf`` whose token directory is a fresh temp dir, points ``SOFTHSM2_CONF`` at it for
the whole session (SoftHSM reads it once, at ``C_Initialize``; child processes inherit it),
initialises two tokens with ``softhsm2-util --init-token --free`` and random PINs, and yields
where they are. Both tokens are made before any test touches the module: SoftHSM lists its
slots when it is initialised.

It skips only when SoftHSM (module or ``softhsm2-util``) or python-pkcs11 is not installed, and
then fails instead when ``PQSELFENC_REQUIRE_HSM=1`` (set by .ci/run, so CI never skips silently).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REQUIRE_ENV = "PQSELFENC_REQUIRE_HSM"
MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
TOKEN = "pqse-test"
OTHER_TOKEN = "pqse-other"


@dataclass(frozen=True)
class SoftHsm:
    """A SoftHSM installation with two fresh tokens (same user PIN on both)."""

    module: str
    token: str
    pin: str
    other_token: str
    conf: Path
    tokendir: Path

    def env(self) -> dict[str, str]:
        """Environment for a child process that uses the token through the PQSELFENC_* vars."""
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf), "PQSELFENC_PKCS11_MODULE":
                self.module, "PQSELFENC_PKCS11_TOKEN": self.token, "PQSELFENC_PKCS11_PIN": self.pin}


def find_module() -> str | None:
    """Path of libsofthsm2.so, or None if SoftHSM is not installed."""
    return next((p for p in MODULE_CANDIDATES if os.path.isfile(p)), None)


def missing() -> str | None:
    """Why the token cannot be provided here (None if it can)."""
    if find_module() is None:
        return "SoftHSM 2 is not installed (apt-get install softhsm2): no libsofthsm2.so"
    if shutil.which("softhsm2-util") is None:
        return "SoftHSM 2 is not installed (apt-get install softhsm2): no softhsm2-util"
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        return "python-pkcs11 is not installed (pip install -e '.[hsm]')"
    return None


def skip_or_fail(reason: str) -> None:
    """Skip with ``reason``, or fail when PQSELFENC_REQUIRE_HSM=1 says the token must be here."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}")
    pytest.skip(reason)


def init_token(conf: Path, label: str, pin: str, so_pin: str) -> None:
    """``softhsm2-util --init-token --free`` under ``conf``."""
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin,
         "--so-pin", so_pin],
        env={**os.environ, "SOFTHSM2_CONF": str(conf)}, check=True, capture_output=True,
        timeout=60,
    )  # fmt: skip


def make_softhsm(root: Path) -> SoftHsm:
    """Config and tokens under ``root`` (which must be private to the test run)."""
    module = find_module()
    assert module is not None
    tokendir = root / "tokens"
    tokendir.mkdir(mode=0o700)
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokendir}\nobjectstore.backend = file\n"
        "log.level = ERROR\nslots.removable = false\n"
    )
    pin, so_pin = f"pin-{secrets.token_hex(6)}", f"so-{secrets.token_hex(6)}"
    for label in (TOKEN, OTHER_TOKEN):
        init_token(conf, label, pin, so_pin)
    return SoftHsm(module, TOKEN, pin, OTHER_TOKEN, conf, tokendir)


@pytest.fixture(scope="session", name="softhsm")
def softhsm_fixture() -> Iterator[SoftHsm]:
    """Two fresh SoftHSM tokens for the session, SOFTHSM2_CONF set while they exist."""
    reason = missing()
    if reason is not None:
        skip_or_fail(reason)
    root = Path(tempfile.mkdtemp(prefix="pqse-softhsm-"))
    try:
        hsm = make_softhsm(root)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SOFTHSM2_CONF", str(hsm.conf))
            yield hsm
    finally:
        shutil.rmtree(root, ignore_errors=True)
