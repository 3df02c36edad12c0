"""Generation-process assurance: SP 800-90B health tests, bounded retries, pairwise tests,
entropy bounds on imported secrets, passphrase strength estimates."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from _keys_support import StoreFactory

from pqselfenc.core import _primitives as P
from pqselfenc.error import WeakSecretError
from pqselfenc.kem import PrivateKey, SigningKey
from pqselfenc.keys import KeyConfig, estimate_passphrase_bits
from pqselfenc.keys._entropy import (
    adaptive_proportion_ok,
    check_passphrase,
    check_secret_length,
    draw_seeds,
    repetition_count_ok,
)


def distinct(n: int) -> bytes:
    """n bytes where no value repeats within 256 and none is adjacent to itself."""
    return bytes(i % 256 for i in range(n))


def test_cutoffs_are_the_sp800_90b_values_for_full_entropy_bytes() -> None:
    # RCT: C = 1 + ceil(20 / H) with alpha = 2^-20, H = 8 -> 4. APT (W = 512, H = 8) -> 13.
    assert (P.RCT_CUTOFF, P.APT_CUTOFF, P.APT_WINDOW) == (4, 13, 512)


@pytest.mark.parametrize(("run", "ok"), [(1, True), (2, True), (3, True), (4, False), (9, False)])
def test_repetition_count_boundary(run: int, ok: bool) -> None:
    for where in (0, 100, 512 - run):
        samples = bytearray(distinct(512))
        samples[where : where + run] = bytes([0xAB]) * run
        assert repetition_count_ok(bytes(samples)) is ok, (run, where)


@pytest.mark.parametrize(("count", "ok"), [(12, True), (13, False)])
def test_adaptive_proportion_boundary(count: int, ok: bool) -> None:
    for window in (0, 1):
        samples = bytearray(os.urandom(1024).translate(bytes.maketrans(b"\x00", b"\x01")))
        base = window * 512
        # count zeros in the window, the first sample among them, never adjacent (RCT stays ok)
        for k in range(count):
            samples[base + k * 37] = 0
        assert samples[base] == 0
        assert adaptive_proportion_ok(bytes(samples)) is ok


def test_adaptive_proportion_counts_only_the_first_sample_of_a_window() -> None:
    samples = bytearray(distinct(512))
    samples[1::37] = bytes([0xEE]) * len(samples[1::37])  # 14 copies, but not of samples[0]
    assert adaptive_proportion_ok(bytes(samples))


def counting_source(outputs: list[bytes]) -> tuple[Callable[[int], bytes], list[int]]:
    calls: list[int] = []

    def source(n: int) -> bytes:
        calls.append(n)
        return outputs[min(len(calls), len(outputs)) - 1][:n].ljust(n, b"\x00")

    return source, calls


def test_draw_seeds_tests_one_full_window_and_cuts_seeds_from_it() -> None:
    good = os.urandom(512)
    while not (repetition_count_ok(good) and adaptive_proportion_ok(good)):
        good = os.urandom(512)
    source, calls = counting_source([good])
    kem, dsa = draw_seeds([96, 32], source)
    assert calls == [512] and kem == good[:96] and dsa == good[96:128]


def test_a_stuck_source_fails_after_bounded_retries() -> None:
    source, calls = counting_source([bytes(512)])
    with pytest.raises(WeakSecretError, match="health tests 3 times"):
        draw_seeds([64], source)
    assert len(calls) == P.HEALTH_TEST_RETRIES


def test_one_bad_draw_is_retried() -> None:
    good = os.urandom(512)
    while not (repetition_count_ok(good) and adaptive_proportion_ok(good)):
        good = os.urandom(512)
    source, calls = counting_source([b"\x07" * 512, good])
    assert draw_seeds([32], source) == [good[:32]]
    assert len(calls) == 2


def test_short_reads_are_failures() -> None:
    with pytest.raises(WeakSecretError):
        draw_seeds([32], lambda n: os.urandom(n - 1))


def test_store_generation_uses_the_health_tests(
    open_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    ks = open_store()
    monkeypatch.setattr(os, "urandom", lambda n: b"\x42" * n)  # a stuck generator
    with pytest.raises(WeakSecretError):
        ks.generate("alice")
    monkeypatch.undo()
    assert "alice" not in ks.identities
    assert not (ks.directory / "secrets" / "alice.v1.key").exists()


def test_pairwise_consistency_failure_stops_generation(
    open_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    ks = open_store()
    ks.generate("alice")

    def broken(self: object, backend: object = None) -> None:
        raise WeakSecretError("x-wing key failed its pairwise consistency test")

    monkeypatch.setattr(PrivateKey, "self_test", broken)
    with pytest.raises(WeakSecretError, match="pairwise"):
        ks.rotate("alice")
    with pytest.raises(WeakSecretError, match="pairwise"):
        ks.generate("bob")
    monkeypatch.undo()

    def broken_sig(self: object) -> None:
        raise WeakSecretError("ML-DSA key failed its pairwise consistency test")

    monkeypatch.setattr(SigningKey, "self_test", broken_sig)
    with pytest.raises(WeakSecretError, match="ML-DSA"):
        ks.generate("carol")
    monkeypatch.undo()
    assert set(ks.identities) == {"alice"} and ks.identity("alice").latest == 1


def test_imported_secrets_below_the_bound_are_refused() -> None:
    assert check_secret_length(bytes(32), 256) == bytes(32)
    with pytest.raises(WeakSecretError, match="at most 248 bits"):
        check_secret_length(bytes(31), 256)
    with pytest.raises(WeakSecretError, match="128-bit bound"):
        check_secret_length(bytes(15), 128)
    with pytest.raises(ValueError):
        KeyConfig(min_entropy=512)  # no seed this store holds could meet it


@pytest.mark.parametrize(
    ("passphrase", "ok"),
    [
        ("password", False),
        ("Tr0ub4dor&3", False),
        ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", False),
        ("qwertyuiopasdfghjkl", False),
        ("correct horse battery staple", True),
        ("gravel orbit candle mosaic tundra", True),
    ],
)
def test_passphrase_strength_estimate(passphrase: str, ok: bool) -> None:
    bits = estimate_passphrase_bits(passphrase)
    assert (bits >= 64) is ok, bits
    if ok:
        assert check_passphrase(passphrase, 64) == passphrase
    else:
        with pytest.raises(WeakSecretError, match="too weak") as info:
            check_passphrase(passphrase, 64)
        assert passphrase not in str(info.value)  # never echoed


def test_long_passphrases_are_estimated_on_a_prefix_and_never_crash() -> None:
    long = "gravel orbit candle mosaic tundra " * 10
    assert estimate_passphrase_bits(long) >= estimate_passphrase_bits(long[:30])
    assert estimate_passphrase_bits("") == 0.0
    with pytest.raises(TypeError):
        estimate_passphrase_bits(b"bytes")  # type: ignore[arg-type]
