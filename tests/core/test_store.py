from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from distillery.core.store import Journal, atomic_dir, atomic_write, iter_jsonl, write_jsonl


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


def test_outputs_get_the_modes_the_umask_gives_not_private_staging_modes(tmp_path: Path) -> None:
    """Teammates on a shared file system read a run: a staged file or folder is not left 0600/0700."""
    mask = os.umask(0o022)
    os.umask(mask)
    with atomic_write(tmp_path / "out.json") as out:
        out.write("{}")
    with atomic_dir(tmp_path / "folder") as staging:
        (staging / "x").write_text("x")
    assert stat.S_IMODE((tmp_path / "out.json").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o777 & ~mask
