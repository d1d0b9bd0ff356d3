"""The verify-and-regenerate loop of one teacher over a stream of queries.

Queries are generated for in batches of `batch_size` requests. After each batch every answer is verified; a
query whose best answer so far scores under the threshold is regenerated with the seed of its next attempt,
up to `max_attempts`. Those retries go into the next batch first and new queries fill the rest, so the engine
always gets full batches. A query is yielded as soon as it is final (accepted, or out of attempts), which lets
the caller journal it at once: a killed shard loses at most the batch in flight.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from distillery.schema.records import Attempt, Query, Trace
from distillery.generate.progress import GenerationProgress
from distillery.generate.prompts import attempt_seed, build_conversation
from distillery.llm.protocol import ChatModel, Completion, Conversation, Sampling
from distillery.verify.verdict import Verdict

logger = logging.getLogger(__name__)

Key = TypeVar("Key")


class BatchVerifier(Protocol):
    def verify_batch(self, pairs: list[tuple[Query, str]]) -> list[Verdict]:
        """One verdict per (query, response), in order."""
        ...


@dataclass
class _Open(Generic[Key]):
    """A query still being worked on."""

    key: Key
    query: Query
    conversation: Conversation
    max_attempts: int
    attempts: list[Attempt] = field(default_factory=list)


@dataclass
class GenerationSettings:
    """What both generation loops need: the teacher, how to sample it, seeds, the pass threshold, the attempts."""

    teacher: str
    sampling: Sampling
    system_prompt: str | None = None
    base_seed: int = 0
    threshold: float = 0.9
    max_attempts: int = 4


@dataclass
class LoopSettings(GenerationSettings):
    batch_size: int = 64


class RegenerationLoop:
    """Runs `model` over queries, verifying with `verifier`; `verifier=None` accepts every first answer unscored."""

    def __init__(self, model: ChatModel, verifier: BatchVerifier | None, settings: LoopSettings,
                 progress: GenerationProgress | None = None, log: logging.Logger | None = None) -> None:
        self.model = model
        self.verifier = verifier
        self.settings = settings
        self.progress = progress
        self.log = log or logger

    def run(self, queries: Iterable[tuple[Key, Query]]) -> Iterator[tuple[Key, Trace]]:
        """Yield (key, trace) once per query, as each becomes final; order follows completion, not input."""
        source = iter(queries)
        retries: deque[_Open[Key]] = deque()
        exhausted = False
        while True:
            batch = [retries.popleft() for _ in range(min(len(retries), self.settings.batch_size))]
            while len(batch) < self.settings.batch_size and not exhausted:
                try:
                    key, query = next(source)
                except StopIteration:
                    exhausted = True
                    break
                conversation = build_conversation(query, self.settings.system_prompt)
                limit = attempt_limit(self.model, conversation, self.verifier is not None, self.settings.max_attempts)
                entry = _Open(key, query, conversation, limit)
                if entry.max_attempts == 0:
                    yield key, self._final(entry)
                else:
                    batch.append(entry)
            if not batch:
                if self.progress is not None:
                    self.progress.stop()
                return
            self._run_batch(batch)
            for entry in batch:
                if self._is_final(entry):
                    yield entry.key, self._final(entry)
                else:
                    retries.append(entry)
            if self.progress is not None:
                self.progress.log(self.log)

    def _run_batch(self, batch: list[_Open[Key]]) -> None:
        settings = self.settings
        seeds = [attempt_seed(settings.base_seed, e.query.id, settings.teacher, len(e.attempts)) for e in batch]
        if self.progress is not None:
            self.progress.request_sent()
        started = time.perf_counter()
        completions = self.model.chat([e.conversation for e in batch], settings.sampling, seeds)
        generate_s = time.perf_counter() - started
        started = time.perf_counter()
        verdicts: list[Verdict | None] = (
            list(self.verifier.verify_batch([(e.query, c.text) for e, c in zip(batch, completions)]))
            if self.verifier is not None else [None] * len(batch)
        )
        verify_s = time.perf_counter() - started
        for entry, seed, completion, verdict in zip(batch, seeds, completions, verdicts):
            entry.attempts.append(make_attempt(len(entry.attempts), seed, completion, verdict, settings.threshold))
        if self.progress is not None:
            self.progress.add_batch(len(batch), sum(c.completion_tokens for c in completions), generate_s, verify_s)

    def _is_final(self, entry: _Open[Key]) -> bool:
        accepted = accepted_index(entry.attempts, self.verifier is not None)
        return accepted is not None or len(entry.attempts) >= entry.max_attempts

    def _final(self, entry: _Open[Key]) -> Trace:
        return final_trace(entry.query, self.settings.teacher, entry.attempts, self.verifier is not None, self.progress)


def accepted_index(attempts: list[Attempt], verified: bool) -> int | None:
    """The lowest attempt index that passed (unverified: the first attempt); None if none did."""
    if not verified:
        return 0 if attempts else None
    return next((a.index for a in attempts if a.passed), None)


def final_trace(query: Query, teacher: str, attempts: list[Attempt], verified: bool,
                progress: GenerationProgress | None) -> Trace:
    """The Trace of a query that is final; counted in `progress`."""
    accepted = accepted_index(attempts, verified)
    if progress is not None:
        progress.finish(query.category, accepted)
    return Trace(
        query=query,
        teacher=teacher,
        attempts=attempts,
        accepted=accepted,
        response_tokens=attempts[accepted].completion_tokens if accepted is not None else 0,
    )


def attempt_limit(model: object, conversation: Conversation, verified: bool, max_attempts: int) -> int:
    """`max_attempts` (1 without verification), lowered for backends with a finite supply of answers (replay)."""
    available = getattr(model, "available", None)
    limit = max_attempts if verified else 1
    return min(limit, available(conversation)) if available is not None else limit


def make_attempt(index: int, seed: int, completion: Completion, verdict: Verdict | None, threshold: float) -> Attempt:
    """One attempt; `passed` is the loop's decision (score >= threshold), not the verifier's own cut-off."""
    details = dict(verdict.details) if verdict is not None else {}
    if completion.extra:
        details["backend"] = completion.extra
    return Attempt(
        index=index,
        seed=seed,
        response=completion.text,
        score=verdict.score if verdict is not None else None,
        passed=verdict.score >= threshold if verdict is not None else None,
        verifier=verdict.verifier if verdict is not None else None,
        details=details,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        latency_s=round(completion.latency_s, 4),
        finish_reason=completion.finish_reason,
    )
