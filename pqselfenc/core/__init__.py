"""The self-encryption engine: chunking, derivation, chunk cipher, DataMap, pipeline, streams,
worker pool, the store contract and the stores. ``pqselfenc.streaming``, ``.parallel`` and
``.memory`` are thin public modules over code that lives here.

Imports run one way: ``core`` <- ``kem`` <- ``keys`` <- ``cli``. Nothing in here imports
``kem``, ``keys`` or a concrete store.
"""
