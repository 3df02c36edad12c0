"""``KeyConfig``: the key store's policy (rotation, entropy bound, post-quantum only).

The class is defined in core (``EncryptionConfig.keys`` holds one and core never imports keys);
this module is where the key store has always imported it from: the same class object.
"""

from __future__ import annotations

from pqselfenc.core._keyconfig import PQ_SIGNATURES, PQ_SUITES, KeyConfig, as_names, check_name

__all__ = ["PQ_SIGNATURES", "PQ_SUITES", "KeyConfig", "as_names", "check_name"]
