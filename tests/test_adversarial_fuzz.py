"""CI runs of the atheris harness (tests/fuzz/fuzz_parsers.py): every target, bounded runs.

Each target runs in its own subprocess under the harness's limits (address space, RSS, per-input
timeout) with a fixed libFuzzer seed, so a run is reproducible. Self-test targets prove that each
kind of finding (an escaping exception, a hang, an unbounded allocation) fails the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ_DIR = Path(__file__).resolve().parent / "fuzz"
HARNESS = FUZZ_DIR / "fuzz_parsers.py"
sys.path.insert(0, str(FUZZ_DIR))

import fuzz_targets  # noqa: E402

# Runs per target: a few seconds each on this 2-core machine; slower targets get fewer.
RUNS = {
    "datamap_decrypt": 1500,
    "datamap_fields": 300,  # decrypts each edited map (a parent map expands 4200 entries)
    "datamap_json_typed": 1000,
    "chunk_frames": 1000,
    "envelope_fields": 600,
    "audit_lines_typed": 800,  # each input re-verifies a log
    "identity_export_typed": 1500,  # each input self-tests key pairs
    "identity_export": 1500,
    "audit_checkpoint": 500,  # each input verifies ML-DSA checkpoint signatures (~70 ms each)
    "audit_lines": 1000,  # each input re-verifies a log
}
DEFAULT_RUNS = 3000


def fuzz(target: str, tmp: Path, *flags: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, str(HARNESS), target, "-seed=1", f"-artifact_prefix={tmp}/", *flags],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, **(env or {})},
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("target", sorted(fuzz_targets.available()))
def test_target_survives_bounded_fuzzing(target: str, tmp_path: Path) -> None:
    runs = RUNS.get(target, DEFAULT_RUNS)
    rc, out = fuzz(target, tmp_path, f"-runs={runs}")
    assert rc == 0, out[-4000:]
    assert f"Done {runs} runs" in out
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*"))


def test_every_parser_has_a_target() -> None:
    """The parsers named by the threat model each have a target once their module exists."""
    names = set(fuzz_targets.available())
    assert {"datamap_bytes", "datamap_json", "datamap_decrypt", "chunk_decrypt"} <= names
    assert {"datamap_json_typed", "datamap_fields", "chunk_frames"} <= names  # structured
    expected = {
        "fuzz_kem": {"envelope_open", "envelope_parse", "public_key_text", "envelope_fields"},
        "fuzz_keys": {"keystore_metadata", "audit_lines", "audit_checkpoint", "identity_export",
                      "keystore_metadata_typed", "audit_lines_typed", "identity_export_typed"},
    }
    for module, targets in expected.items():
        if (FUZZ_DIR / f"{module}.py").exists():
            assert targets <= names, f"{module} lacks targets {targets - names}"


@pytest.mark.parametrize(
    ("target", "evidence"),
    [
        ("selftest_escape", "Uncaught Python exception"),
        ("selftest_hang", "libFuzzer: timeout"),
        ("selftest_allocate", "MemoryError"),
    ],
)
def test_harness_reports_each_kind_of_finding(target: str, evidence: str, tmp_path: Path) -> None:
    env = {fuzz_targets.SELFTEST_ENV: "1"}
    rc, out = fuzz(target, tmp_path, "-runs=500", "-timeout=1", env=env)
    assert rc != 0
    assert evidence in out, out[-2000:]
    assert list(tmp_path.glob("crash-*")) or list(tmp_path.glob("timeout-*"))


def test_input_shapes_reach_seeds_and_raw_bytes() -> None:
    target = fuzz_targets.available()["datamap_bytes"]
    seed = fuzz_targets.cached_seeds("datamap_bytes")[1]
    assert fuzz_targets.decode_input(target, b"\x03") == seed  # odd: seed 1, no edits
    assert fuzz_targets.decode_input(target, b"\x02raw") == b"raw"  # even: raw
    edited = fuzz_targets.decode_input(target, b"\x03" + bytes([4, 0, 5, 0]))  # truncate at 5
    assert edited == seed[:5]
