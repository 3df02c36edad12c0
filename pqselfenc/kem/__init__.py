"""Sealing DataMaps for named recipients with post-quantum HPKE (CRYPTO.md section 3).

A DataMap holds every chunk key, so it is the secret that travels. ``seal`` encrypts it for
one or many recipients' public keys (one HPKE stanza each, over a fresh random data-map key)
and optionally signs it with ML-DSA; ``open_sealed`` opens it with the reader's own identity
and, if asked, checks who sealed it::

    from pqselfenc.kem import generate_identity, seal, open_sealed
    alice = generate_identity("x-wing")          # or "ml-kem-1024", "ml-kem-768"
    sealed = seal(data_map, [alice.recipient(), bob_public_key])
    data_map = open_sealed(sealed, [alice])

Suites (``SUITE_NAMES``, the default first): HPKE (RFC 9180) with KEM X-Wing (ML-KEM-768 +
X25519, the default), ML-KEM-1024 or ML-KEM-768, KDF SHAKE256, AEAD AES-256-GCM, all from
`cryptography`. Signatures (``SIGNATURE_ALGORITHMS``): ML-DSA-65 or ML-DSA-87.
docs/format.md describes the bytes; threat-model/kem.md what they protect against.
"""

from pqselfenc.kem._backend import (
    CryptographyBackend,
    KemBackend,
    LiboqsProbe,
    OqsBackend,
    get_backend,
    probe_liboqs,
)
from pqselfenc.kem._envelope import EnvelopeInfo, inspect, open_sealed, seal
from pqselfenc.kem._keys import (
    SUITE_NAMES,
    Identity,
    PrivateKey,
    PublicKey,
    Recipient,
    Stanza,
    generate_identity,
)
from pqselfenc.kem._signing import SigningKey, VerifyingKey

SIGNATURE_ALGORITHMS = ("ml-dsa-65", "ml-dsa-87")

__all__ = [
    "SIGNATURE_ALGORITHMS",
    "SUITE_NAMES",
    "CryptographyBackend",
    "EnvelopeInfo",
    "Identity",
    "KemBackend",
    "LiboqsProbe",
    "OqsBackend",
    "PrivateKey",
    "PublicKey",
    "Recipient",
    "SigningKey",
    "Stanza",
    "VerifyingKey",
    "generate_identity",
    "get_backend",
    "inspect",
    "open_sealed",
    "probe_liboqs",
    "seal",
]
