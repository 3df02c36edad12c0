"""The key store, as the commands open it: backend choice, passphrase, sealing and opening."""

from __future__ import annotations

from pqselfenc.cli._output import CliError
from pqselfenc.cli._session import Session
from pqselfenc.core.config import EncryptionConfig
from pqselfenc.core.datamap import DataMap

_MISSING = CliError("this build has no key store yet")


def convergence_secret(session: Session) -> bytes:
    raise _MISSING


def secret_config(session: Session, config: EncryptionConfig, needed: bool) -> EncryptionConfig:
    if not needed:
        return config
    return config.with_convergence_secret(convergence_secret(session))


def open_sealed(session: Session, raw: bytes, where: str) -> DataMap:
    raise _MISSING


def seal_map(session: Session, data_map: DataMap, recipients: list[str]) -> bytes:
    raise _MISSING


def check_recipients(session: Session, names: list[str]) -> None:
    raise _MISSING
