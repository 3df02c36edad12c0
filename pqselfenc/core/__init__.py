"""The self-encryption engine: chunking, derivation, chunk cipher, DataMap, pipeline, stores.

Imports run one way: ``core`` <- ``kem`` <- ``keys`` <- ``cli``. Nothing in here imports
``kem``, ``keys`` or a concrete store.
"""
