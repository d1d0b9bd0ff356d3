"""The variant reads the teacher's filter verdicts beside the attempt log, one row of each stream at a time: it must
find the same verdicts a lookup table over the whole shard would, also when resume skips queries already done and
when several attempts of one query come in a row (keep_all). The streams are built here in memory, in the order the
runner writes them (each filter's kept and dropped records are subsequences of the attempt log's accepted ones)."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from typing import Any

from distillery.core.stage import Item, ShardContext
from distillery.core.store import RunDir
from distillery.variants.stage import _TeacherVerdicts

STEPS = ["perplexity", "ngram", "structure"]


class _Shard:
    """A shard's outputs of the attempt log and of every filter step (the part of `StepInputs` the reader uses)."""

    def __init__(self, seed: int, queries: int = 60) -> None:
        rng = random.Random(seed)
        self.log = [{"query": {"id": f"q{n}"}, "accepted": rng.randrange(3)} for n in range(queries)]
        self.drops: dict[str, list[dict[str, Any]]] = {step: [] for step in STEPS}
        self.final: list[dict[str, Any]] = []
        self.expected: dict[str, tuple[Any, Any]] = {}
        for record in self.log:
            fate = rng.choice([*STEPS, None, None])
            qid = record["query"]["id"]
            if fate is None:
                kept = {**record, "metadata": {"kept": True}}
                self.final.append(kept)
                self.expected[qid] = (kept, None)
            else:
                self.drops[fate].append({"key": qid, "reason": f"dropped by {fate}", "record": record})
                self.expected[qid] = (None, (fate, f"dropped by {fate}", record))

    def shard(self, shard_index: int, step: str | None = None) -> Iterator[Item]:
        rows = self.log if step == "generate" else self.final
        for position, record in enumerate(rows):
            yield Item(position, record["query"]["id"], record)

    def dropped(self, step: str, shard_index: int) -> Iterator[dict[str, Any]]:
        yield from self.drops[step]


def _context(shard: _Shard) -> ShardContext:
    return ShardContext(RunDir("unused"), "variants", "t1+v", 0, 1, logging.getLogger("test"), inputs=shard)  # type: ignore[arg-type]


def test_verdicts_match_a_whole_shard_lookup_with_resume_gaps_and_repeated_attempts() -> None:
    for seed in range(20):
        shard = _Shard(seed)
        rng = random.Random(seed + 100)
        asked = [r["query"]["id"] for r in shard.log if rng.random() > 0.3]  # resume skipped the others
        asked = [qid for qid in asked for _ in range(rng.choice([1, 1, 3]))]  # keep_all: attempts in a row
        asked += ["refused-1", "refused-2"]  # queries the log refused come after its accepted ones
        verdicts = _TeacherVerdicts(_context(shard), "generate", STEPS)
        for qid in asked:
            assert verdicts.of(qid) == shard.expected.get(qid, (None, None)), (seed, qid)
