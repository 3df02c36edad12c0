"""docs/guide.md: its Python blocks run, in order, as one program."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guide.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def test_guide_has_python_blocks() -> None:
    assert len(BLOCK.findall(GUIDE.read_text())) >= 5


def test_guide_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "guide"}
    for number, block in enumerate(BLOCK.findall(GUIDE.read_text()), 1):
        code = compile(block, f"docs/guide.md block {number}", "exec")
        exec(code, namespace)
    assert (tmp_path / "keys" / "audit.jsonl").is_file()
    assert os.listdir(tmp_path / "chunks")
