"""One file of JSON lines grouped by destination: how a shuffle's writer hands each reader its own rows.

A writer sends (destination, line) pairs in any order; the file holds them grouped by destination, each group in
the order written, and a sidecar `<name>.offsets.npy` holds where each group starts (destinations 0..n-1, then the
end). One file per writer (not one per writer and reader: at thousands of shards that would be millions of files)
and one seek per reader. The lines go through a spool first, so the writer holds only three integers per line.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from distillery.core.store import atomic_path, atomic_write


def offsets_path(path: Path) -> Path:
    return path.with_name(path.name + ".offsets.npy")


def write_buckets(path: Path, rows: Iterable[tuple[int, bytes]], destinations: int) -> int:
    """Write `rows` (destination in [0, destinations), one JSON line ending in a newline) grouped by destination;
    return how many. The data file is complete before its offsets exist, and both are written atomically."""
    dests: list[int] = []
    starts: list[int] = []
    sizes: list[int] = []
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=path.parent, prefix=f".{path.name}.spool.") as spool:
        position = 0
        for dest, line in rows:
            dests.append(dest)
            starts.append(position)
            sizes.append(len(line))
            spool.write(line)
            position += len(line)
        dests_R = np.asarray(dests, dtype=np.int64)
        if dests_R.size and (dests_R.min() < 0 or dests_R.max() >= destinations):
            raise ValueError(f"{path}: a destination outside [0, {destinations})")
        order_R = np.argsort(dests_R, kind="stable")
        starts_R, sizes_R = np.asarray(starts, dtype=np.int64), np.asarray(sizes, dtype=np.int64)
        del dests, starts, sizes
        with atomic_write(path, "wb") as out:
            for row in order_R.tolist():
                spool.seek(int(starts_R[row]))
                out.write(spool.read(int(sizes_R[row])))
    counts_D = np.bincount(dests_R, minlength=destinations)
    offsets = np.concatenate([[0], np.cumsum(sizes_R[order_R])])[np.concatenate([[0], np.cumsum(counts_D)])]
    with atomic_path(offsets_path(path)) as tmp, tmp.open("wb") as out:
        np.save(out, offsets.astype(np.int64))
    return int(dests_R.size)


def read_bucket(path: Path, dest: int) -> Iterator[dict[str, Any]]:
    """The rows written to `dest`, in the order written."""
    offsets = np.load(offsets_path(path))
    start, stop = int(offsets[dest]), int(offsets[dest + 1])
    if start == stop:
        return
    with path.open("rb") as handle:
        handle.seek(start)
        position = start
        while position < stop:
            line = handle.readline()
            if not line:
                raise ValueError(f"{path}: ends at byte {position}, before the {stop} its offsets promise")
            position += len(line)
            yield json.loads(line)
