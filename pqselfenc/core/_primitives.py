"""Every label, size and derivation of pqselfenc, in one place.

Each constant carries a one-line reason why it is safe. Nothing here is hand-rolled: hashes come
from ``hashlib`` (OpenSSL), HKDF, HMAC and AES-GCM from ``cryptography``. Other modules import
these names and never spell a label or a size themselves; docs/format.md describes the same bytes.

Sections: 1. content chunks, 2. DataMap, 3. sealed envelope, 4. keys and audit.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# --------------------------------------------------------------------------------------------
# 1. Content chunks
# --------------------------------------------------------------------------------------------

# Format version of chunks and maps; it is part of every pipeline id, so a v2 derivation can
# never produce a v1 key for the same content. Version 1: uncompressed pipelines (written
# today) and compressed ones written before version 2 (still read).
FORMAT_VERSION = 1

# Version 2: compressed pipelines, with a synthetic nonce (SIV_NONCE_LABEL below). zstd does not
# promise the same frame for the same input across releases (and raw vs compressed can flip),
# so a nonce derived from the plaintext alone could meet two frames; v2 derives it from the
# frame itself. Uncompressed pipelines stay version 1: their frame is a function of the
# plaintext hash that is already in the derivation.
SIV_FORMAT_VERSION = 2
FORMAT_VERSIONS = (FORMAT_VERSION, SIV_FORMAT_VERSION)

# SHA3-256 of a chunk's plaintext: 256-bit output keeps 128-bit collision resistance even
# against Grover/BHT-style quantum search.
SRC_HASH_SIZE = 32

# SHA-256 of the stored ciphertext (the chunk's name): same post-quantum margin as SHA3-256 for
# collisions (128 bits), 3.6x faster here (SHA-NI) and S3 verifies it natively (ChecksumSHA256).
NAME_SIZE = 32

# AES-256: 128-bit security against Grover, the post-quantum choice (AES-128 drops to 64).
CHUNK_KEY_SIZE = 32

# 96-bit GCM nonce; derived, never random. Keys are content-derived, so one (key, nonce) pair
# only ever sees one plaintext (see pipeline_id below for why that holds across pipelines).
CHUNK_NONCE_SIZE = 12

# GCM tag, full length; truncated tags weaken forgery bounds.
TAG_SIZE = 16

# HKDF info prefix for chunk keys; distinct from every other label in this module.
CHUNK_KEY_LABEL = b"pqselfenc/v1/chunk-key"

# Constant AAD: binds every chunk ciphertext to this format and version, and to nothing
# position-dependent, so identical chunk triples deduplicate wherever they occur.
CHUNK_AAD = b"pqselfenc/v1/chunk"

# Version 2 (compressed pipelines): K_i || K_nonce = HKDF-SHA3-256(ikm, salt, info = label ||
# pipeline id, L = 64). Its own label and length: no v2 output is ever a v1 key or nonce (the
# pipeline id differs too), and K_nonce is independent of K_i (separate HKDF output blocks).
CHUNK_SIV_KEY_LABEL = b"pqselfenc/v2/chunk-key"

# HMAC-SHA-256 key of the synthetic nonce: 256 bits, as the chunk key.
NONCE_KEY_SIZE = 32

# Version 2 AAD: format label and version, constant (no index: dedup as in version 1).
CHUNK_AAD_V2 = b"pqselfenc/v2/chunk"

# Version 2 stores the 12-byte synthetic nonce in front of the GCM ciphertext; it is
# HMAC-SHA-256(K_nonce, frame)[:12]: equal frames get equal nonces (dedup kept), two different
# frames under one key share a nonce with probability 2^-96 per pair (a PRF truncated to 96
# bits), and the frame's own bytes, not the plaintext hash, decide it.
SIV_NONCE_SIZE = CHUNK_NONCE_SIZE

# HKDF salt when no convergence secret is set: RFC 5869 allows a zero salt; the security of
# unsalted convergent encryption is exactly the classic scheme's (public dedup domain).
ZERO_SALT = bytes(32)

# The convergence secret scopes deduplication to a domain; 256 bits so it cannot be guessed.
CONVERGENCE_SECRET_SIZE = 32

# Label for the public id of a convergence secret stored in DataMaps: a one-way PRF output, so
# the id names the domain without revealing the secret.
SECRET_ID_LABEL = b"pqselfenc/v1/convergence-secret-id"
SECRET_ID_SIZE = 16

# Compression algorithm ids inside the pipeline id (never cryptography/zstd enum values).
COMPRESSION_NONE = 0
COMPRESSION_ZSTD = 1
COMPRESSION_IDS = {"none": COMPRESSION_NONE, "zstd": COMPRESSION_ZSTD}
COMPRESSION_NAMES = {v: k for k, v in COMPRESSION_IDS.items()}

# First byte of every chunk plaintext, inside the ciphertext: says whether the body is raw or
# compressed, so an incompressible chunk is stored raw without a second pipeline.
BODY_RAW = 0
BODY_ZSTD = 1

# Stored bytes a chunk adds to its plaintext, per format version: flag byte and GCM tag, and in
# version 2 the synthetic nonce in front. A stored chunk longer than its src_size plus this
# cannot be one a writer made (an incompressible chunk is stored raw), checked before the tag.
CHUNK_OVERHEAD = {FORMAT_VERSION: 1 + TAG_SIZE, SIV_FORMAT_VERSION: SIV_NONCE_SIZE + 1 + TAG_SIZE}

# zstd windows a writer's frames use: zstd's parameter table gives levels 1..19 a window of at
# most 2^23 bytes, levels 20, 21, 22 at most 2^25, 2^26, 2^27 (and never more than the content,
# which every frame we write declares). A reader refuses a frame asking for more before decoding
# it, so a hostile frame cannot make the decoder reserve more than an honest one of its level.
ZSTD_MAX_WINDOW = 1 << 23
ZSTD_MAX_WINDOW_ULTRA = 1 << 27
ZSTD_ULTRA_WINDOWS = {20: 1 << 25, 21: 1 << 26, 22: ZSTD_MAX_WINDOW_ULTRA}

_PIPELINE = struct.Struct(">BBi")


def writer_version(compression: int) -> int:
    """The format version pqselfenc writes for ``compression``: 2 when compressed, else 1."""
    return FORMAT_VERSION if compression == COMPRESSION_NONE else SIV_FORMAT_VERSION


def pipeline_id(compression: int, level: int, version: int | None = None) -> bytes:
    """Format version, compression algorithm and level, as bytes.

    Part of every chunk key's HKDF info: the same content under another pipeline gets another
    key, so AES-GCM never sees one (key, nonce) pair with two different plaintexts. ``version``
    defaults to the one writers use for ``compression`` (``writer_version``); readers pass the
    version their DataMap names.
    """
    v = writer_version(compression) if version is None else version
    return _PIPELINE.pack(v, compression, level)


def zstd_max_window(level: int) -> int:
    """The largest zstd window a frame written at ``level`` uses (see ZSTD_MAX_WINDOW)."""
    return ZSTD_ULTRA_WINDOWS.get(level, ZSTD_MAX_WINDOW)


def src_hash(plaintext: bytes | memoryview) -> bytes:
    """SHA3-256 of a chunk's plaintext (releases the GIL on large inputs)."""
    return hashlib.sha3_256(plaintext).digest()


def src_hasher() -> hashlib._Hash:
    """An incremental ``src_hash``: for plaintext that is decompressed piece by piece."""
    return hashlib.sha3_256()


def chunk_name(stored: bytes | memoryview) -> bytes:
    """SHA-256 of a stored chunk: its content address, checkable without any key."""
    return hashlib.sha256(stored).digest()


def chunk_key_nonce(
    h: bytes, h_prev: bytes, h_prev2: bytes, salt: bytes, pipeline: bytes
) -> tuple[bytes, bytes]:
    """K_i || N_i = HKDF-SHA3-256(ikm = h_i || h_{i-1} || h_{i-2}, salt, info = label || pipeline).

    Indices run on a ring (as in classic self-encryption): every key depends on three chunks'
    contents, and no index enters the derivation, so equal triples deduplicate anywhere.
    """
    okm = hkdf_sha3(
        h + h_prev + h_prev2,
        salt=salt,
        info=CHUNK_KEY_LABEL + pipeline,
        length=CHUNK_KEY_SIZE + CHUNK_NONCE_SIZE,
    )
    return okm[:CHUNK_KEY_SIZE], okm[CHUNK_KEY_SIZE:]


def chunk_siv_keys(
    h: bytes, h_prev: bytes, h_prev2: bytes, salt: bytes, pipeline: bytes
) -> tuple[bytes, bytes]:
    """Version 2: K_i || K_nonce = HKDF-SHA3-256(same ikm and salt, info = v2 label || pipeline).

    Same inputs as ``chunk_key_nonce`` (the ring of source hashes, no index), so dedup holds;
    the nonce itself comes from ``synthetic_nonce`` over the frame actually encrypted.
    """
    okm = hkdf_sha3(
        h + h_prev + h_prev2,
        salt=salt,
        info=CHUNK_SIV_KEY_LABEL + pipeline,
        length=CHUNK_KEY_SIZE + NONCE_KEY_SIZE,
    )
    return okm[:CHUNK_KEY_SIZE], okm[CHUNK_KEY_SIZE:]


def synthetic_nonce(nonce_key: bytes, framed: bytes | memoryview) -> bytes:
    """Version 2 nonce: HMAC-SHA-256(K_nonce, frame)[:12] (SHA-NI: ~2x GCM's cost, far below
    zstd's), so two different frames under one chunk key get different nonces."""
    return hmac.new(nonce_key, framed, "sha256").digest()[:SIV_NONCE_SIZE]


def secret_id(secret: bytes) -> bytes:
    """Public 16-byte id of a convergence secret (HMAC-SHA3-256 under the secret, truncated)."""
    return hmac.new(secret, SECRET_ID_LABEL, hashlib.sha3_256).digest()[:SECRET_ID_SIZE]


# --------------------------------------------------------------------------------------------
# 2. DataMap
# --------------------------------------------------------------------------------------------

# Magic of the binary DataMap; 8 bytes so `file` and humans recognise it.
MAP_MAGIC = b"PQSEMAP\x00"

# JSON form's "format" field.
MAP_JSON_FORMAT = "pqselfenc-datamap"

# Inputs shorter than min_chunks bytes are stored inline; min_chunks is bounded by this, so an
# inline body is at most 254 bytes and its length fits one byte.
MAX_MIN_CHUNKS = 255

# A leaf map with more entries than this is self-encrypted into a parent map. 4096 entries is
# ~278 KiB of map, so every level stays small enough to hold, seal and parse in memory.
MAX_MAP_ENTRIES = 4096

# Parsers refuse more entries than this in one map (bounded allocation); it is also the most a
# parent level can need for a 2^64-byte input at the smallest sensible chunk size.
MAX_PARSE_ENTRIES = 1 << 20

# Levels strictly descend to 0; 8 levels at 4096 entries each cover more than 2^64 bytes.
MAX_MAP_LEVEL = 8

# Binary DataMap sizes: the fixed head (magic 8, version, child, compression, level, secret id
# length, total size 8, count 4), one entry (src_hash 32, name 32, src_size 4).
MAP_HEAD_SIZE = 25
MAP_ENTRY_SIZE = SRC_HASH_SIZE + NAME_SIZE + 4

# The largest serialized map a writer encrypts into a parent level: MAX_PARSE_ENTRIES entries
# and a secret id (~68 MiB). A parent level claiming more content is refused unread, so a
# parent map's entry sizes can never make a reader hold more than this of one level.
MAX_MAP_BYTES = MAP_HEAD_SIZE + SECRET_ID_SIZE + MAP_ENTRY_SIZE * MAX_PARSE_ENTRIES

# Chunk sizes are bounded so a src_size fits u32 and one chunk always fits in memory.
MAX_CHUNK_SIZE = 1 << 30

# The largest piece a writer cuts: chunk_size + min_chunks - 2 bytes (below min_chunks *
# chunk_size bytes the last of min_chunks pieces takes the remainder, see core/_chunking.py).
# Map parsers refuse a larger src_size, so no claim beyond what a writer makes reaches a reader.
MAX_SRC_SIZE = MAX_CHUNK_SIZE + (MAX_MIN_CHUNKS - 2)

# The largest chunk a writer stores: the largest piece plus the largest overhead (version 2's
# nonce, flag byte, GCM tag; zstd only when smaller). Readers refuse a larger stored chunk
# without reading it.
MAX_STORED_CHUNK_SIZE = MAX_SRC_SIZE + max(CHUNK_OVERHEAD.values())

# Largest sealed or binary map file a reader accepts (a binary map of MAX_PARSE_ENTRIES entries
# is ~68 MiB, an envelope at most ~130 MiB); a JSON map has its own, smaller bound (below).
MAX_MAP_FILE_SIZE = 256 << 20

# Largest JSON map a reader parses. A writer's top-level map has at most MAX_MAP_ENTRIES entries
# (a larger one is shrunk, 2.2), whose JSON form is at most ~0.9 MiB (~1.2 MiB indented by 8):
# 4 MiB is well above any honest one, and json.loads costs up to ~27x its input (docs 2.3).
MAX_MAP_JSON_SIZE = 4 << 20

# Most ',' '[' '{' a JSON map may hold (counted before parsing, strings included: no honest
# string holds one). An honest map has 4 per entry and 10 more; each value json.loads makes is a
# Python object, so this count, not only the size, bounds the parse's memory.
MAX_MAP_JSON_VALUES = 8 * MAX_MAP_ENTRIES

# --------------------------------------------------------------------------------------------
# 3. Sealed envelope (kem/)
# --------------------------------------------------------------------------------------------

# Magic of a sealed DataMap envelope.
ENVELOPE_MAGIC = b"PQSESEAL"

# Envelope format version.
ENVELOPE_VERSION = 1

# Our own suite ids (never cryptography's enum integers, which may change between releases).
SUITE_XWING = 1  # HPKE KEM MLKEM768_X25519 (X-Wing hybrid), KDF SHAKE256, AES-256-GCM
SUITE_MLKEM1024 = 2  # HPKE KEM MLKEM1024 (CNSA 2.0 level), KDF SHAKE256, AES-256-GCM
SUITE_MLKEM768 = 3  # HPKE KEM MLKEM768, KDF SHAKE256, AES-256-GCM

# Fresh random data-map key per seal; 256 bits for 128-bit post-quantum security.
DMK_SIZE = 32

# Random envelope id; 128 bits so two envelopes never share one (birthday bound 2^64).
ENVELOPE_ID_SIZE = 16

# Key id in a stanza: truncated SHA3-256 of the public key. It only selects which stanza to
# try; a collision costs one extra HPKE decryption, never security.
KEY_ID_SIZE = 16
KEY_ID_LABEL = b"pqselfenc/v1/key-id"

# HPKE info of each stanza = label || envelope id || suite id: a stanza moved into another
# envelope, or read under another suite, fails to open.
STANZA_INFO_LABEL = b"pqselfenc/v1/stanza"

# Header MAC key = HKDF-SHA3-256(DMK, info=label): commits the envelope to the DMK, which
# AES-GCM alone does not (it is not key-committing).
HEADER_MAC_LABEL = b"pqselfenc/v1/header"

# Payload key = HKDF-SHA3-256(DMK, salt=envelope id, info=label); one message per key, so a
# fixed all-zero nonce is safe.
PAYLOAD_KEY_LABEL = b"pqselfenc/v1/payload"
PAYLOAD_NONCE = bytes(12)

# ML-DSA context string (FIPS 204 ctx) for envelope signatures: a signature over anything else
# this library signs never verifies as an envelope signature.
SIGNATURE_CONTEXT = b"pqselfenc/v1/envelope-signature"

# Opening tries at most this many stanzas (bounded work for hostile envelopes).
MAX_STANZAS = 1024

# Suite names people type; the ids above are what the bytes carry.
SUITE_IDS = {"x-wing": SUITE_XWING, "ml-kem-1024": SUITE_MLKEM1024, "ml-kem-768": SUITE_MLKEM768}

# Exact sizes per suite (FIPS 203, X-Wing = ML-KEM-768 key || X25519 key): the parsers accept
# nothing else. Seeds: ML-KEM d || z (64), plus the X25519 scalar (32) for X-Wing.
SUITE_PUBLIC_KEY_SIZE = {SUITE_XWING: 1184 + 32, SUITE_MLKEM1024: 1568, SUITE_MLKEM768: 1184}
SUITE_ENC_SIZE = {SUITE_XWING: 1088 + 32, SUITE_MLKEM1024: 1568, SUITE_MLKEM768: 1088}
SUITE_SEED_SIZE = {SUITE_XWING: 64 + 32, SUITE_MLKEM1024: 64, SUITE_MLKEM768: 64}

# A wrapped DMK is the HPKE AES-256-GCM ciphertext of the DMK: full-length tag, no truncation.
WRAPPED_DMK_SIZE = DMK_SIZE + TAG_SIZE

# HMAC-SHA3-256 output, untruncated: 256-bit tag.
HEADER_MAC_SIZE = 32

# Sender signature algorithms (our ids, never cryptography's) with FIPS 204 sizes; 0 = unsigned.
SIG_NONE = 0
SIG_MLDSA65 = 1  # ML-DSA-65 (category 3, matches ML-KEM-768)
SIG_MLDSA87 = 2  # ML-DSA-87 (category 5, CNSA 2.0 level)
SIG_IDS = {"ml-dsa-65": SIG_MLDSA65, "ml-dsa-87": SIG_MLDSA87}
SIG_PUBLIC_KEY_SIZE = {SIG_MLDSA65: 1952, SIG_MLDSA87: 2592}
SIG_SIZE = {SIG_MLDSA65: 3309, SIG_MLDSA87: 4627}

# Key id of a signer's verifying key: its own label, so it never equals a recipient key id.
VERIFYING_KEY_ID_LABEL = b"pqselfenc/v1/verifying-key-id"

# Largest sealed payload: above any DataMap the map parser accepts (2^20 entries x 68 bytes);
# bounds what a hostile envelope can make the opener allocate.
ENVELOPE_MAX_PAYLOAD = 1 << 27

# Key text: prefix naming kind and suite, base32 body, 4-byte checksum over prefix || key.
# The checksum only catches typos (p = 2^-32 that one slips through); it is no authenticity.
KEY_TEXT_LABEL = b"pqselfenc/v1/key-text"
KEY_TEXT_CHECKSUM_SIZE = 4
PUBLIC_KEY_TEXT_PREFIX = "pqse-pub-"
VERIFYING_KEY_TEXT_PREFIX = "pqse-sig-"


def key_id(label: bytes, algorithm: int, public: bytes) -> bytes:
    """Truncated SHA3-256 of label || algorithm id || public key: names a key, reveals nothing."""
    return hashlib.sha3_256(label + bytes((algorithm,)) + public).digest()[:KEY_ID_SIZE]


def stanza_info(envelope_id: bytes, suite: int) -> bytes:
    """HPKE info of a stanza: binds it to one envelope and one suite."""
    return STANZA_INFO_LABEL + envelope_id + bytes((suite,))


def header_mac(dmk: bytes, header: bytes) -> bytes:
    """HMAC-SHA3-256 over the header under HKDF-SHA3-256(DMK, info=label): commits to the DMK."""
    key = hkdf_sha3(dmk, info=HEADER_MAC_LABEL)
    return hmac.new(key, header, hashlib.sha3_256).digest()


def payload_key(dmk: bytes, envelope_id: bytes) -> bytes:
    """AES-256-GCM key of the payload: HKDF-SHA3-256(DMK, salt=envelope id, info=label)."""
    return hkdf_sha3(dmk, salt=envelope_id, info=PAYLOAD_KEY_LABEL)


def key_text_checksum(prefix: bytes, raw: bytes) -> bytes:
    """Typo check of a key's text form; covers the prefix, so a changed suite name is caught."""
    digest = hashlib.sha3_256(KEY_TEXT_LABEL + len(prefix).to_bytes(2, "big") + prefix + raw)
    return digest.digest()[:KEY_TEXT_CHECKSUM_SIZE]


# --------------------------------------------------------------------------------------------
# 4. Keys and audit (keys/)
# --------------------------------------------------------------------------------------------

MLKEM_SEED_SIZE = 64  # FIPS 203 (d || z); the private key is re-expanded from it
X25519_KEY_SIZE = 32  # RFC 7748 scalar
MLDSA_SEED_SIZE = 32  # FIPS 204 xi

# argon2id, RFC 9106 second recommended option: memory-hard, so a stolen key file costs an
# offline attacker 64 MiB and 3 passes per passphrase guess.
ARGON2_TIME_COST = 3
ARGON2_MEMORY_KIB = 64 * 1024
ARGON2_PARALLELISM = 4
ARGON2_SALT_SIZE = 16
KEY_FILE_LABEL = b"pqselfenc/v1/key-file"

# SP 800-90B section 4.4 health tests on raw 8-bit samples, alpha = 2^-20, H = 8 bits/sample
# (full-entropy CSPRNG output): repetition count cutoff 4, adaptive proportion cutoff 13 in a
# window of 512 samples.
RCT_CUTOFF = 4
APT_CUTOFF = 13
APT_WINDOW = 512
HEALTH_TEST_RETRIES = 3

# Audit log: SHA3-256 hash chain; checkpoints signed with ML-DSA under this context.
AUDIT_CHAIN_LABEL = b"pqselfenc/v1/audit-chain"
AUDIT_SIGNATURE_CONTEXT = b"pqselfenc/v1/audit-checkpoint"

# Audit line MAC: HMAC-SHA3-256 under HKDF-SHA3-256(root secret, info=label) over the line's
# 32-byte chain hash and the u64 byte offset where the line starts in audit.jsonl. The hash
# covers prev, so a valid MAC on a line authenticates the whole prefix; the offset pins the line
# to its place, so a genuine line copied elsewhere (a replay) fails. Whoever can write the
# directory but lacks the root secret cannot extend the chain.
AUDIT_MAC_LABEL = b"pqselfenc/v1/audit-line-mac"
AUDIT_MAC_SIZE = 32

# Audit times may step back by at most this many seconds from one line to the next (an NTP step
# of the system clock); a larger step back is reported by verify. Times are taken under the lock.
AUDIT_CLOCK_STEP_BACK = 600

# Largest counter read from a file (audit seq, metadata generation, audit_mac_from): below 2^63,
# so it fits every signed 64-bit field (the PKCS#11 anchor stores u64) with room for +1.
MAX_COUNTER = (1 << 63) - 1

# Largest key version number: the file backend's AAD packs it as u32 (section 4.3).
MAX_KEY_VERSION = (1 << 32) - 1

# Claimed security strength in bits of each KEM suite and signature (NIST security categories
# of FIPS 203/204: category 3 = 192 bits (AES-192), category 5 = 256 bits (AES-256)). X-Wing is
# ML-KEM-768 combined with X25519: as strong as its stronger part, ML-KEM-768 (category 3).
# ``KeyConfig.min_entropy`` refuses any suite or signature below it.
SUITE_STRENGTH_BITS = {SUITE_XWING: 192, SUITE_MLKEM1024: 256, SUITE_MLKEM768: 192}
SIG_STRENGTH_BITS = {SIG_MLDSA65: 192, SIG_MLDSA87: 256}

# Imported seeds: refused when they repeat with a period of at most this many bytes (all-zero
# and constant seeds have period 1); a uniformly random 32-byte seed does so with probability
# below 2^-128. A check against trivial seeds, not a measure of entropy.
SEED_MAX_PERIOD = 16

# Convergence secret of a key store's domain: derived per domain from the store's root secret.
CONVERGENCE_SECRET_LABEL = b"pqselfenc/v1/convergence-secret"

# keystore.json MAC: HMAC-SHA3-256 under HKDF-SHA3-256(root secret, info=label), over the
# canonical JSON of the metadata without its "mac" field; an insider who can write the store
# directory but does not hold the root secret cannot forge it (docs/format.md section 4).
METADATA_MAC_LABEL = b"pqselfenc/v1/keystore-metadata-mac"
METADATA_MAC_SIZE = 32

# Key store file formats: magics name the file type so one is never parsed as another.
VAULT_MAGIC = b"PQSEVLT\x00"  # file backend header: argon2id params, salt, wrapped vault key
KEY_FILE_MAGIC = b"PQSEKEY\x00"  # one encrypted secret of the file backend
EXPORT_MAGIC = b"PQSEEXP\x00"  # passphrase-protected identity export
KEY_FILE_VERSION = 1

# Random vault key wrapped under the argon2id output (a passphrase change rewraps 32 bytes);
# 256 bits for 128-bit post-quantum security.
VAULT_KEY_SIZE = 32

# Random 96-bit AES-GCM nonces under one vault subkey: a key store writes far fewer than the
# 2^32 messages NIST SP 800-38D allows per key with random nonces.
GCM_NONCE_SIZE = 12

# AAD of a wrapped vault key and of an export blob: binds each to its own format and header.
VAULT_WRAP_LABEL = b"pqselfenc/v1/vault-key"
EXPORT_LABEL = b"pqselfenc/v1/key-export"

# First "prev" of the audit hash chain: a fixed all-zero value, as in any hash chain genesis.
AUDIT_GENESIS = bytes(32)

# Largest files the key store and the CLI read (bounded reads refuse more without reading it):
# key text (a public and a verifying key, a few KiB), a file-backend secret or vault.key (a
# seed record under AES-GCM, a few hundred bytes), an identity export (~350 bytes per version:
# 16 MiB is ~45,000 versions), the audit log read whole by verify (1 GiB is millions of events)
# and audit.checkpoint (one audit line).
MAX_KEY_TEXT_FILE_SIZE = 64 << 10
MAX_SECRET_FILE_SIZE = 64 << 10
MAX_EXPORT_FILE_SIZE = 16 << 20
MAX_AUDIT_LOG_SIZE = 1 << 30
MAX_AUDIT_LINE_SIZE = 1 << 20


def hkdf_sha3(ikm: bytes, *, info: bytes, length: int = 32, salt: bytes | None = None) -> bytes:
    """HKDF-SHA3-256 (RFC 5869 over SHA3-256): the one KDF every derivation above uses."""
    return HKDF(algorithm=hashes.SHA3_256(), length=length, salt=salt, info=info).derive(ikm)


def metadata_mac_key(root: bytes) -> bytes:
    """Key of the keystore.json MAC: HKDF-SHA3-256(store root secret, info=label)."""
    return hkdf_sha3(root, info=METADATA_MAC_LABEL, length=METADATA_MAC_SIZE)


def metadata_mac(key: bytes, canonical: bytes) -> bytes:
    """HMAC-SHA3-256 over the canonical JSON of the metadata (without its "mac" field)."""
    return hmac.new(key, canonical, hashlib.sha3_256).digest()


def audit_mac_key(root: bytes) -> bytes:
    """Key of the audit line MACs: HKDF-SHA3-256(store root secret, info=AUDIT_MAC_LABEL)."""
    return hkdf_sha3(root, info=AUDIT_MAC_LABEL, length=AUDIT_MAC_SIZE)


def audit_mac(key: bytes, line_hash: bytes, offset: int) -> bytes:
    """HMAC-SHA3-256 over an audit line's 32-byte chain hash || its u64 offset in the log."""
    return hmac.new(key, line_hash + offset.to_bytes(8, "big"), hashlib.sha3_256).digest()

# PKCS#11 backend (keys/pkcs11_backend.py, docs/format.md 4.7): one token-wrapped secret per file.
# Magic of one wrapped secret of the pkcs11 backend: names the file type, never parsed as another.
P11_BLOB_MAGIC = b"PQSEP11\x00"
P11_BLOB_VERSION = 1
# AAD prefix of a wrapped secret; the AAD also binds store id, header, name and version, so a
# blob moved to another name, version or store fails its tag.
P11_WRAP_LABEL = b"pqselfenc/v1/pkcs11-wrap"
# CKA_ID of the wrapping key: random, 128 bits, so a blob names the one key that wrapped it.
P11_KEY_ID_SIZE = 16
# Random 96-bit GCM IVs under one token key per store: far fewer than the 2^32 messages
# NIST SP 800-38D allows per key with random IVs.
P11_IV_SIZE = 12
P11_TAG_SIZE = 16  # full GCM tag (CK_GCM_PARAMS.ulTagBits = 128)
P11_MAX_SECRET = 4096  # seeds are <= 130 bytes; bounds what a hostile file makes us read
# Rollback anchor (keys/_anchor.py): {generation, audit seq, audit hash} kept outside the store
# folder, in a private token data object (pkcs11) or an OS keyring entry (keyring), as this record.
ANCHOR_MAGIC = b"PQSEANC\x00"
ANCHOR_VERSION = 1
ANCHOR_HASH_SIZE = 32  # SHA3-256 audit chain hash
# Keyring service of the anchors (user = the store id); apart from the secrets' "pqselfenc/<id>".
ANCHOR_KEYRING_SERVICE = "pqselfenc-anchor"
P11_KEY_LABEL_PREFIX = "pqselfenc-"  # CKA_LABEL of a store's wrapping key: prefix + store id
P11_ANCHOR_LABEL_PREFIX = "pqselfenc-anchor-"  # CKA_LABEL of a store's anchor data object
P11_APPLICATION = "pqselfenc"  # CKA_APPLICATION of the anchor data objects
