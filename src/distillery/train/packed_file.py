"""The packed-token HDF5 file that `pack` writes and `sft` reads.

Datasets (flat over the whole file; one bin = one training sequence):
    tokens        int32  [T]      token ids, bins back to back
    loss_mask     uint8  [T]      1 where the token is a training target (last assistant turn)
    position_ids  int32  [T]      restart at 0 at every document start
    cu_seqlens    int64  [D+1]    document boundaries as token offsets into `tokens`
    bin_docs      int64  [B+1]    bin b holds documents bin_docs[b] .. bin_docs[b+1]-1
    doc_ids       str    [D]      record key of each document
Attributes: capacity, efficiency, tokenizer.
"""

from __future__ import annotations

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


def write_packed(path: Path, docs: list[tuple[str, np.ndarray, np.ndarray]], bins: list[list[int]],
                 capacity: int, attrs: dict[str, Any]) -> int:
    """Write `docs` (key, tokens, loss mask) in `bins` order to `path` atomically; return the token count."""
    order = [doc for bin_docs in bins for doc in bin_docs]
    lengths = np.asarray([len(docs[doc][1]) for doc in order], dtype=np.int64)
    cu_seqlens = np.zeros(len(order) + 1, dtype=np.int64)
    np.cumsum(lengths, out=cu_seqlens[1:])
    total = int(cu_seqlens[-1])
    tokens = np.concatenate([docs[doc][1] for doc in order]).astype(np.int32) if order else np.zeros(0, np.int32)
    loss_mask = np.concatenate([docs[doc][2] for doc in order]).astype(np.uint8) if order else np.zeros(0, np.uint8)
    position_ids = (np.arange(total, dtype=np.int64) - np.repeat(cu_seqlens[:-1], lengths)).astype(np.int32)
    bin_docs = np.zeros(len(bins) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in bins], out=bin_docs[1:])
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as out:
        out.create_dataset("tokens", data=tokens, chunks=True if total else None)
        out.create_dataset("loss_mask", data=loss_mask)
        out.create_dataset("position_ids", data=position_ids)
        out.create_dataset("cu_seqlens", data=cu_seqlens)
        out.create_dataset("bin_docs", data=bin_docs)
        out.create_dataset("doc_ids", data=np.asarray([docs[doc][0] for doc in order], dtype=object),
                           dtype=h5py.string_dtype())
        out.attrs["capacity"] = capacity
        for key, value in attrs.items():
            out.attrs[key] = value
    return total


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
