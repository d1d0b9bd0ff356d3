from __future__ import annotations

import json
from pathlib import Path

import pytest

from distillery.core.store import Journal, atomic_write, iter_jsonl, write_jsonl


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError), atomic_write(target) as out:
        out.write("half a record")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_gzip_shards_read_back(tmp_path: Path) -> None:
    rows = [{"id": str(i), "x": i} for i in range(5)]
    count, _ = write_jsonl(tmp_path / "a.jsonl.gz", rows, compress=True)
    assert count == 5
    assert list(iter_jsonl(tmp_path / "a.jsonl.gz")) == rows


def test_journal_drops_a_line_cut_short_and_keeps_complete_ones(tmp_path: Path) -> None:
    path = tmp_path / "shard.journal"
    journal = Journal(path, {"k": 1})
    journal.append({"key": "a"})
    journal.append({"key": "b"})
    journal.close()
    with path.open("ab") as handle:
        handle.write(b'{"key": "c", "rec')  # a kill in the middle of a write
    reopened = Journal(path, {"k": 1})
    assert [e["key"] for e in reopened.entries()] == ["a", "b"]
    reopened.append({"key": "c"})
    reopened.close()
    lines = path.read_bytes().splitlines()
    assert [json.loads(line).get("key") for line in lines[1:]] == ["a", "b", "c"]


def test_journal_with_another_header_is_discarded(tmp_path: Path) -> None:
    path = tmp_path / "shard.journal"
    journal = Journal(path, {"config": "old"})
    journal.append({"key": "a"})
    journal.close()
    assert list(Journal(path, {"config": "new"}).entries()) == []
