"""The packed-token HDF5 file that `pack` writes and `sft` reads.

Datasets (flat over the whole file; one bin = one training sequence):
    tokens        int32  [T]      token ids, bins back to back
    loss_mask     uint8  [T]      1 where the token is a training target (last assistant turn)
    position_ids  int32  [T]      restart at 0 at every document start
    cu_seqlens    int64  [D+1]    document boundaries as token offsets into `tokens`
    bin_docs      int64  [B+1]    bin b holds documents bin_docs[b] .. bin_docs[b+1]-1
    doc_ids       str    [D]      record key of each document
Attributes: capacity, efficiency, tokenizer.

A sharded `pack` step writes one such file per task; `PackedDataset` reads them as one sequence of bins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from distillery.core.store import atomic_path


@dataclass(frozen=True)
class PackedBin:
    """One training sequence: several documents back to back, never attending to each other."""

    tokens: np.ndarray
    loss_mask: np.ndarray
    position_ids: np.ndarray
    cu_seqlens: np.ndarray
    """Document boundaries inside this bin, starting at 0 and ending at len(tokens)."""

    def labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Next-token targets and their weights; a target never crosses into the next document."""
        labels = np.zeros_like(self.tokens)
        labels[:-1] = self.tokens[1:]
        weights = np.zeros(len(self.tokens), dtype=np.float32)
        weights[:-1] = self.loss_mask[1:]
        weights[self.cu_seqlens[1:] - 1] = 0.0
        return labels, weights


class PackedWriter:
    """Writes a packed file a window of bins at a time (every dataset grows as windows come), so a packer holds one
    window of documents, never the corpus. Use as a context manager: the file appears, atomically, on success."""

    _GROWING = {"tokens": np.int32, "loss_mask": np.uint8, "position_ids": np.int32, "cu_seqlens": np.int64,
                "bin_docs": np.int64}

    def __init__(self, path: Path, capacity: int) -> None:
        self.path = path
        self.capacity = capacity
        self.tokens = 0
        self.documents = 0
        self.bins = 0
        self.attrs: dict[str, Any] = {}

    def __enter__(self) -> PackedWriter:
        self._atomic = atomic_path(self.path)
        self._file = h5py.File(self._atomic.__enter__(), "w")
        for name, dtype in self._GROWING.items():
            self._file.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(1 << 14,))
        self._file.create_dataset("doc_ids", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype(),
                                  chunks=(1 << 10,))
        self._append("cu_seqlens", np.zeros(1, np.int64))
        self._append("bin_docs", np.zeros(1, np.int64))
        return self

    def _append(self, name: str, values: np.ndarray) -> None:
        dataset = self._file[name]
        size = dataset.shape[0]
        dataset.resize((size + len(values),))
        dataset[size:] = values

    def add(self, docs: list[tuple[str, np.ndarray, np.ndarray]], bins: list[list[int]]) -> None:
        """Append `bins` (lists of indices into `docs`: key, tokens, loss mask), in order."""
        order = [doc for bin_docs in bins for doc in bin_docs]
        if not order:
            return
        lengths = np.asarray([len(docs[doc][1]) for doc in order], dtype=np.int64)
        ends = np.cumsum(lengths)
        self._append("tokens", np.concatenate([docs[doc][1] for doc in order]).astype(np.int32))
        self._append("loss_mask", np.concatenate([docs[doc][2] for doc in order]).astype(np.uint8))
        self._append("position_ids", (np.arange(int(ends[-1])) - np.repeat(ends - lengths, lengths)).astype(np.int32))
        self._append("cu_seqlens", self.tokens + ends)
        self._append("bin_docs", self.documents + np.cumsum([len(b) for b in bins]))
        self._append("doc_ids", np.asarray([docs[doc][0] for doc in order], dtype=object))
        self.tokens += int(ends[-1])
        self.documents += len(order)
        self.bins += len(bins)

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self._file.attrs["capacity"] = self.capacity
            for key, value in self.attrs.items():
                self._file.attrs[key] = value
        self._file.close()
        self._atomic.__exit__(*exc)


def write_packed(path: Path, docs: list[tuple[str, np.ndarray, np.ndarray]], bins: list[list[int]],
                 capacity: int, attrs: dict[str, Any]) -> int:
    """Write `docs` (key, tokens, loss mask) in `bins` order to `path` atomically; return the token count."""
    with PackedWriter(path, capacity) as writer:
        writer.add(docs, bins)
        writer.attrs.update(attrs)
    return writer.tokens


class PackedReader:
    """Random access to the bins of a packed file.

    Only the small index arrays are loaded; token arrays are read from disk one bin at a time, since at the
    paper's scale (~7B tokens) every rank of a node holding them in memory would not fit.
    """

    def __init__(self, path: Path) -> None:
        self._file = h5py.File(path, "r")
        self.cu_seqlens = self._file["cu_seqlens"][()]
        self.bin_docs = self._file["bin_docs"][()]
        self.attrs = dict(self._file.attrs)
        self._tokens = self._file["tokens"]
        self._loss_mask = self._file["loss_mask"]
        self._position_ids = self._file["position_ids"]

    @property
    def doc_ids(self) -> list[str]:
        return [d.decode() if isinstance(d, bytes) else d for d in self._file["doc_ids"][()]]

    @property
    def total_tokens(self) -> int:
        return int(self.cu_seqlens[-1])

    @property
    def capacity(self) -> int:
        return int(self.attrs["capacity"])

    @property
    def document_count(self) -> int:
        return len(self.cu_seqlens) - 1

    def __len__(self) -> int:
        return len(self.bin_docs) - 1

    def __getitem__(self, bin_index: int) -> PackedBin:
        first, last = int(self.bin_docs[bin_index]), int(self.bin_docs[bin_index + 1])
        bounds = self.cu_seqlens[first:last + 1]
        start, end = int(bounds[0]), int(bounds[-1])
        return PackedBin(self._tokens[start:end], self._loss_mask[start:end], self._position_ids[start:end],
                         bounds - start)

    def documents(self, bin_index: int) -> list[str]:
        first, last = int(self.bin_docs[bin_index]), int(self.bin_docs[bin_index + 1])
        return [d.decode() if isinstance(d, bytes) else d for d in self._file["doc_ids"][first:last]]

    def close(self) -> None:
        self._file.close()


class PackedDataset:
    """The bins of several packed files (a sharded pack step's) as one sequence: file after file, each in its bin
    order. Holds each file's handle and index arrays (what one file of the same bins would hold), never tokens."""

    def __init__(self, paths: Sequence[Path]) -> None:
        if not paths:
            raise ValueError("no packed files to read")
        self.readers = [PackedReader(path) for path in paths]
        capacities = {reader.capacity for reader in self.readers}
        if len(capacities) > 1:
            raise ValueError(f"packed files of different bin capacities {sorted(capacities)}: {list(paths)}")
        self.capacity = capacities.pop()
        self._starts = np.cumsum([0] + [len(reader) for reader in self.readers])
        """Global index of each file's first bin, and the total last."""

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _locate(self, bin_index: int) -> tuple[PackedReader, int]:
        if not 0 <= bin_index < len(self):
            raise IndexError(f"bin {bin_index} of {len(self)}")
        file_index = int(np.searchsorted(self._starts, bin_index, side="right")) - 1
        return self.readers[file_index], bin_index - int(self._starts[file_index])

    def __getitem__(self, bin_index: int) -> PackedBin:
        reader, local = self._locate(bin_index)
        return reader[local]

    def documents(self, bin_index: int) -> list[str]:
        reader, local = self._locate(bin_index)
        return reader.documents(local)

    @property
    def document_count(self) -> int:
        return sum(reader.document_count for reader in self.readers)

    @property
    def total_tokens(self) -> int:
        return sum(reader.total_tokens for reader in self.readers)

    def close(self) -> None:
        for reader in self.readers:
            reader.close()
