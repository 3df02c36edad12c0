"""Seal a DataMap to many recipients and open it as the last one; per suite, median of runs.

    python3 benchmarks/bench_seal.py                 # 100 recipients, all suites
    python3 benchmarks/bench_seal.py --recipients 1000 --runs 5 --signed
    python3 benchmarks/bench_seal.py --budget-ms 100 # exit 1 if a median exceeds the budget

Opening as the last recipient is the worst case for the opener: it compares every stanza's key
id before its one HPKE decryption. Key generation is not timed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

from pqselfenc import DataMap, EncryptionConfig, SelfEncryptor
from pqselfenc.kem import SUITE_NAMES, PrivateKey, SigningKey, open_sealed, seal


def median_ms(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench(
    suite: str, data_map: DataMap, n: int, runs: int, signer: SigningKey | None
) -> tuple[float, float, int]:
    readers = [PrivateKey.generate(suite) for _ in range(n)]
    public = [r.recipient() for r in readers]
    sealed = seal(data_map, public, signer)
    expected = None if signer is None else signer.verifying_key()
    assert open_sealed(sealed, [readers[-1]], expected) == data_map
    seal_ms = median_ms(lambda: seal(data_map, public, signer), runs)
    open_ms = median_ms(lambda: open_sealed(sealed, [readers[-1]], expected), runs)
    return seal_ms, open_ms, len(sealed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=100)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--signed", action="store_true", help="also sign with ML-DSA-65")
    parser.add_argument("--budget-ms", type=float, default=None)
    args = parser.parse_args()
    # A realistic top-level map: 1 GiB in 1 MiB chunks is 1,024 entries (~70 KB serialized).
    data = bytes(64 * 1024)
    data_map = SelfEncryptor(data, EncryptionConfig(chunk_size=64)).encrypt()[0]
    signer = SigningKey.generate() if args.signed else None
    size = len(data_map.to_bytes())
    print(f"{args.recipients} recipients, DataMap {size} bytes, signed={args.signed}")
    over = False
    for suite in SUITE_NAMES:
        seal_ms, open_ms, size = bench(suite, data_map, args.recipients, args.runs, signer)
        line = f"seal {seal_ms:7.2f} ms   open as last {open_ms:6.2f} ms   {size / 1024:8.1f} KiB"
        print(f"  {suite:12} {line}")
        over |= args.budget_ms is not None and max(seal_ms, open_ms) > args.budget_ms
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
