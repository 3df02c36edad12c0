"""Token access for the PKCS#11 backend: load the vendor module, find the token, log in once per
process, translate every ``python-pkcs11`` exception at the boundary.

PKCS#11 keeps the login state per application, not per session: a second ``C_Login`` in the same
process answers ``CKR_USER_ALREADY_LOGGED_IN``. So one logged-in read/write session per (module,
token) is shared by every backend of the process, counted, and closed (logging out) when the last
user closes it. A later open with another PIN is refused by comparing a keyed digest of the PIN
(the token is not asked: it would only say "already logged in"). ``C_Initialize`` is called
without threading arguments, so one process-wide lock serialises every call into the module.
After ``fork`` the child re-initialises the module and logs in afresh (PKCS#11 2.40 section 6.7.1).

Nothing here keeps a PIN: only HMAC-SHA3-256(random per-process key, PIN), to compare. Messages
name exception classes and configuration variables, never a PIN.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pqselfenc.error import (
    Error,
    IntegrityError,
    KeyDestroyedError,
    KeyStoreError,
    TokenPinError,
    TokenUnavailable,
)

if TYPE_CHECKING:
    import pkcs11
    from pkcs11._pkcs11 import lib as Lib

__all__ = [
    "ENV_MODULE",
    "ENV_PIN",
    "ENV_TOKEN",
    "Capabilities",
    "TokenSession",
    "connect",
    "destroy_object",
    "find_objects",
    "private_objects",
    "translate",
]

T = TypeVar("T")



ENV_MODULE = "PQSELFENC_PKCS11_MODULE"
ENV_TOKEN = "PQSELFENC_PKCS11_TOKEN"  # noqa: S105 (a variable name, not a secret)
ENV_PIN = "PQSELFENC_PKCS11_PIN"

# PKCS#11 3.2 mechanism numbers (OASIS pkcs11-spec-v3.2, section 6.x "ML-KEM" / "ML-DSA", and
# pkcs11t.h: CKM_ML_KEM_KEY_PAIR_GEN 0x0F, CKM_ML_KEM 0x17, CKM_ML_DSA_KEY_PAIR_GEN 0x1C,
# CKM_ML_DSA 0x1D); python-pkcs11 0.10 names the same values Mechanism.ML_KEM etc.
CKM_ML_KEM_KEY_PAIR_GEN = 0x0000000F
CKM_ML_KEM = 0x00000017
CKM_ML_DSA_KEY_PAIR_GEN = 0x0000001C
CKM_ML_DSA = 0x0000001D


_PIN_CLASSES = ("PinIncorrect", "PinInvalid", "PinLenRange", "PinLocked", "PinExpired")
_TOKEN_CLASSES = ("NoSuchToken", "TokenNotPresent", "TokenNotRecognised", "DeviceRemoved",
                  "SlotIDInvalid", "MultipleTokensReturned", "UserNotLoggedIn",
                  "SessionHandleInvalid", "SessionClosed", "DeviceError", "DeviceMemory",
                  "UserPinNotInitialized", "TokenWriteProtected")  # fmt: skip
_GONE_CLASSES = ("KeyHandleInvalid", "ObjectHandleInvalid", "NoSuchKey")
# What a token answers when a GCM tag does not verify: the spec says CKR_ENCRYPTED_DATA_INVALID
# (or ..._LEN_RANGE for a short input); SoftHSM 2.6 answers CKR_GENERAL_ERROR.
_TAG_CLASSES = ("EncryptedDataInvalid", "EncryptedDataLenRange", "GeneralError")


def translate(exc: Exception, what: str, *, decrypting: bool = False) -> Error:
    """Our error for what ``python-pkcs11`` raised during ``what``; only class names go in."""
    name = type(exc).__name__
    if name in _PIN_CLASSES:
        return TokenPinError(f"the token refused the PIN ({name}) during {what}")
    if name in _TOKEN_CLASSES:
        return TokenUnavailable(f"PKCS#11 token not usable during {what} ({name}): {ENV_TOKEN}?")
    if decrypting and name in _TAG_CLASSES:
        return IntegrityError(f"{what} failed authentication in the token ({name})")
    if name in _GONE_CLASSES:
        return KeyDestroyedError(f"the token object is gone during {what} ({name})")
    return KeyStoreError(f"PKCS#11 {what} failed ({name})")


@dataclass(frozen=True)
class Capabilities:
    """Which PKCS#11 3.2 post-quantum mechanisms the token's slot lists (probed, never assumed)."""

    token: str
    ml_kem: bool
    ml_dsa: bool

    def statement(self) -> str:
        """One line for the CLI: what the token does and what pqselfenc does with it."""
        wrap = ("decapsulation and signing keys are wrapped by the token's AES key and unwrapped "
                "in process memory per use")  # fmt: skip
        if not (self.ml_kem or self.ml_dsa):
            return f"token {self.token!r} implements no ML-KEM/ML-DSA mechanisms: {wrap}"
        found = (n for n, ok in (("ML-KEM", self.ml_kem), ("ML-DSA", self.ml_dsa)) if ok)
        return f"token {self.token!r} implements {' and '.join(found)}, unused so far: {wrap}"


def _pin_digest(pin: str) -> bytes:
    return hmac.new(_PROCESS_KEY, pin.encode("utf-8"), hashlib.sha3_256).digest()


_PROCESS_KEY = os.urandom(32)  # keys the PIN digests of this process; never leaves memory
_LOCK = threading.RLock()  # C_Initialize(NULL): the module may assume one thread at a time
_OPEN: dict[tuple[str, str], _Shared] = {}  # (resolved module path, token label) -> session
_LIBS: dict[str, Lib] = {}  # every module this process loaded, by resolved path
_PID = [os.getpid()]
_LOGIN_RETRY_DELAYS = (0.01, 0.02, 0.04, 0.08, 0.16)
_FIND_TRIES = 8


@dataclass
class _Shared:
    """The process's one logged-in session on a token, and who uses it."""

    lib: Lib
    token: pkcs11.Token
    session: pkcs11.Session
    pin: bytes
    users: int = 1


def _import_pkcs11() -> None:
    try:
        import pkcs11  # noqa: F401
    except ImportError as exc:
        raise TokenUnavailable(
            "python-pkcs11 is not installed: pip install 'pqselfenc[hsm]'"
        ) from exc


def _after_fork() -> None:
    """In a forked child: forget the parent's sessions (never close them) and re-initialise
    every module this process loaded (a child must call ``C_Initialize`` itself)."""
    if _PID[0] == os.getpid():
        return
    _OPEN.clear()
    _PID[0] = os.getpid()
    for lib in _LIBS.values():
        try:
            lib.reinitialize()
        except Exception as exc:  # python-pkcs11 raises PKCS11Error subclasses
            raise translate(exc, "re-initialising the module after fork") from exc


def _load(module: str) -> Lib:
    """The module at ``module`` (a resolved path: python-pkcs11 caches one per path string, and
    two initialisations of one library would collide), loaded and initialised."""
    import pkcs11

    if not os.path.isabs(module) or not os.path.isfile(module):
        raise TokenUnavailable(
            f"PKCS#11 module {module!r} is not an existing file given by its absolute path"
            f" (set {ENV_MODULE} to the vendor's .so)"
        )
    try:
        lib = _LIBS[module] = pkcs11.lib(module)
        return lib
    except Exception as exc:  # PKCS11Error("OS exception while loading ...") and others
        raise TokenUnavailable(
            f"cannot load PKCS#11 module {module!r} ({type(exc).__name__}); check {ENV_MODULE}"
        ) from exc


def _reset_if_idle(lib: Lib) -> None:
    """Re-initialise the module if this process has no session on it: drops a session a failed
    ``C_Login`` left open (python-pkcs11 does not close it) and makes SoftHSM reload its tokens."""
    if not any(shared.lib is lib for shared in _OPEN.values()):
        with suppress(Exception):  # best effort: the error being reported matters more
            lib.reinitialize()


def _open_session(lib: Lib, label: str, pin: str) -> _Shared:
    token = lib.get_token(token_label=label)
    return _Shared(lib, token, token.open(rw=True, user_pin=pin), _pin_digest(pin))


def _login(module: str, label: str, pin: str) -> _Shared:
    """Find the token and log in. Retried only on "no such token" and CKR_GENERAL_ERROR:
    SoftHSM 2.6's file store fails ``C_GetTokenInfo``/``C_Login`` that way, or stops listing
    the token, while another process rewrites the token's files (SoftHSMv2 issue #757). A PIN
    is never retried (real tokens lock after a few wrong ones). An absent token costs ~0.3 s."""
    import pkcs11

    lib = _load(os.path.realpath(module))
    for delay in (*_LOGIN_RETRY_DELAYS, None):
        try:
            return _open_session(lib, label, pin)
        except (pkcs11.NoSuchToken, pkcs11.GeneralError) as exc:
            _reset_if_idle(lib)
            if delay is None and isinstance(exc, pkcs11.NoSuchToken):
                raise TokenUnavailable(
                    f"no PKCS#11 token labelled {label!r} in {module!r} (check {ENV_TOKEN})"
                ) from exc
            if delay is None:
                raise translate(exc, f"logging in to token {label!r}") from exc
            time.sleep(delay)
        except Exception as exc:  # PinIncorrect and friends, MultipleTokensReturned, devices
            _reset_if_idle(lib)
            raise translate(exc, f"logging in to token {label!r}") from exc
    raise AssertionError("unreachable")


def connect(module: str, label: str, pin: str) -> TokenSession:
    """A handle on the process's logged-in session on token ``label`` of ``module``."""
    if not isinstance(pin, str) or not pin:
        raise TokenPinError(f"no PKCS#11 PIN: set {ENV_PIN} or pass one")
    try:
        pin.encode("utf-8")
    except UnicodeEncodeError:
        raise TokenPinError("the PKCS#11 PIN is not valid text (UTF-8)") from None
    _import_pkcs11()
    key = (os.path.realpath(module), label)
    with _LOCK:
        _after_fork()
        shared = _OPEN.get(key)
        if shared is None:
            _OPEN[key] = _login(module, label, pin)
        elif not hmac.compare_digest(shared.pin, _pin_digest(pin)):
            raise TokenPinError(
                f"token {label!r} is already logged in by this process with another PIN"
            )
        else:
            shared.users += 1
    return TokenSession(key)


class TokenSession:
    """One user's share of a logged-in session; ``run`` calls into the token under the lock."""

    def __init__(self, key: tuple[str, str]) -> None:
        self._key = key
        self._closed = False

    def __repr__(self) -> str:
        return f"TokenSession(token={self._key[1]!r})"

    @property
    def label(self) -> str:
        """The token's label."""
        return self._key[1]

    def _shared(self) -> _Shared:
        _after_fork()
        shared = None if self._closed else _OPEN.get(self._key)
        if shared is None:
            raise TokenUnavailable(f"the session on token {self._key[1]!r} is closed")
        return shared

    @contextmanager
    def locked(self, what: str, *, decrypting: bool = False) -> Iterator[pkcs11.Session]:
        """The session, under the process-wide lock; foreign exceptions are translated."""
        with _LOCK:
            session = self._shared().session
            try:
                yield session
            except Error:
                raise
            except Exception as exc:  # python-pkcs11 raises PKCS11Error subclasses and others
                raise translate(exc, what, decrypting=decrypting) from exc

    def run(self, fn: Callable[[pkcs11.Session], T], what: str, *, decrypting: bool = False) -> T:
        """``fn(session)`` under the lock, its foreign exceptions translated."""
        with self.locked(what, decrypting=decrypting) as session:
            return fn(session)

    def token_info(self) -> tuple[str, bytes, set[int]]:
        """Label, serial and the slot's mechanism numbers (no login needed for these)."""
        with self.locked("reading the token's mechanism list"):
            token = self._shared().token
            return token.label, token.serial, {int(m) for m in token.slot.get_mechanisms()}

    def capabilities(self) -> Capabilities:
        """Probe the slot's mechanism list for the PKCS#11 3.2 ML-KEM and ML-DSA mechanisms."""
        label, _serial, mechanisms = self.token_info()
        return Capabilities(
            token=label,
            ml_kem={CKM_ML_KEM, CKM_ML_KEM_KEY_PAIR_GEN} <= mechanisms,
            ml_dsa={CKM_ML_DSA, CKM_ML_DSA_KEY_PAIR_GEN} <= mechanisms,
        )

    def close(self) -> None:
        """Give up this share; the last one closes the session (and so logs out)."""
        with _LOCK:
            if self._closed:
                return
            self._closed = True
            _after_fork()
            shared = _OPEN.get(self._key)
            if shared is None:
                return
            shared.users -= 1
            if shared.users == 0:
                del _OPEN[self._key]
                try:
                    shared.session.close()
                except Exception as exc:  # a device gone already: nothing is left open
                    raise translate(exc, "closing the session") from exc


def find_objects(session: pkcs11.Session, query: dict[Any, Any]) -> list[Any]:
    """``C_FindObjects``, retried when another process destroys a match before python-pkcs11
    reads its class (a few times: each retry means another process made progress)."""
    from pkcs11 import ObjectHandleInvalid

    for _ in range(_FIND_TRIES - 1):
        with suppress(ObjectHandleInvalid):
            return list(session.get_objects(query))
    return list(session.get_objects(query))


def private_objects(session: pkcs11.Session, object_class: Any, label: str,
                    extra: dict[Any, Any] | None = None) -> list[Any]:  # fmt: skip
    """Private token objects of ``object_class`` under ``label`` (and with the ``extra``
    attributes): the only objects pqselfenc ever uses. Public ones, which anyone who reaches the
    token may create without the PIN, never match."""
    from pkcs11 import Attribute as A

    query = {A.CLASS: object_class, A.LABEL: label, A.PRIVATE: True, A.TOKEN: True}
    return find_objects(session, {**query, **(extra or {})})


def destroy_object(obj: Any) -> None:
    """Destroy ``obj`` unless another process already did (SoftHSM 2.6 then answers
    CKR_FUNCTION_FAILED, the spec CKR_OBJECT_HANDLE_INVALID: gone either way if it cannot
    be read any more)."""
    from pkcs11 import Attribute as A
    from pkcs11 import FunctionFailed, ObjectHandleInvalid

    try:
        obj.destroy()
    except ObjectHandleInvalid:
        return
    except FunctionFailed:
        try:
            obj[A.CLASS]
        except ObjectHandleInvalid:
            return
        raise
