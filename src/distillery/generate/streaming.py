"""The streaming verify-and-regenerate loop: the engine always holds up to `max_in_flight` requests.

Requests go to the backend in groups (`StreamingChatModel.submit_many`: every request due when the loop
wakes, added by the engine in one step). As each answer completes it goes to verification
(`VerificationLanes`, off the engine's path) and its slot is refilled at once: first with requests already
due (the rest of a parallel wave, a retry whose failed verdict came back), then with new queries. The loop
tells the backend when it has nothing more to send (`set_backlog`), so the engine's own step log can count
steps with free slots while requests were due. Unlike the batch loop, the engine never waits for a batch's
longest answer nor for a batch's verdicts.

Back-pressure: when `max_verify_queue` answers are waiting for their verdicts, no new query is admitted (due
retries still are) until verification catches up; the loop logs each such episode and counts its time, so
memory stays bounded and `status` shows that verification is the bottleneck.

Which attempt is accepted does not depend on timing: a query's next wave is decided only when every attempt
of its current wave has its verdict, and the accepted attempt is the lowest index that passed. Queries are
yielded in completion order; the runner journals each at once and writes the shard's output sorted by input
position, so the output's content and order do not depend on completion order.
"""

from __future__ import annotations

import logging
import queue
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from distillery.schema.records import Attempt, Query, Trace
from distillery.generate.loop import GenerationSettings, attempt_limit, final_trace, make_attempt
from distillery.generate.progress import GenerationProgress
from distillery.generate.prompts import attempt_seed, build_conversation
from distillery.generate.strategy import Strategy, strategy_for
from distillery.generate.verification import VerificationLanes
from distillery.llm.protocol import Completion, Conversation, StreamingChatModel
from distillery.verify.verdict import Verdict

logger = logging.getLogger(__name__)

Key = TypeVar("Key")


@dataclass
class StreamingSettings(GenerationSettings):
    max_in_flight: int = 64
    max_verify_queue: int = 256
    strategy: dict[str, str] = field(default_factory=dict)
    """Strategy table (see `generate.strategy`): `default`, category, `teacher/category` keys."""
    log_every_s: float = 10.0


@dataclass
class _Query(Generic[Key]):
    key: Key
    query: Query
    conversation: Conversation
    max_attempts: int
    strategy: Strategy
    attempts: dict[int, Attempt] = field(default_factory=dict)
    wave: list[int] = field(default_factory=list)


@dataclass
class _Request(Generic[Key]):
    entry: _Query[Key]
    index: int
    seed: int
    completion: Completion | None = None


_Event = tuple[Literal["generated", "verified"], Future, _Request]


class StreamingLoop(Generic[Key]):
    """Runs `model` over queries, verifying through `lanes`; `lanes=None` accepts every first answer unscored."""

    def __init__(self, model: StreamingChatModel, lanes: VerificationLanes | None, settings: StreamingSettings,
                 progress: GenerationProgress | None = None, log: logging.Logger | None = None) -> None:
        self.model = model
        self.lanes = lanes
        self.settings = settings
        self.progress = progress or GenerationProgress(total=0)
        self.progress.streaming = True
        self.progress.max_in_flight = settings.max_in_flight
        self.log = log or logger
        self._events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        self._generating = 0
        self._verifying = 0

    def run(self, queries: Iterable[tuple[Key, Query]]) -> Iterator[tuple[Key, Trace]]:
        """Yield (key, trace) once per query, as each becomes final; order follows completion, not input."""
        settings, progress = self.settings, self.progress
        source = iter(queries)
        due: deque[_Request[Key]] = deque()
        exhausted = held_back = False
        last_log = time.perf_counter()
        backlog = True
        self.model.set_backlog(True)
        progress.track(0, 0, False)
        while True:
            blocked = False
            sending: list[_Request[Key]] = []
            while self._generating + len(sending) < settings.max_in_flight:
                if due:
                    sending.append(due.popleft())
                    continue
                if exhausted:
                    break
                if self._verifying >= settings.max_verify_queue:
                    blocked = True
                    break
                try:
                    key, query = next(source)
                except StopIteration:
                    exhausted = True
                    break
                entry = self._open(key, query)
                if entry.max_attempts == 0:
                    yield key, final_trace(query, settings.teacher, [], self.lanes is not None, progress)
                    continue
                due.extend(self._wave(entry))
            self._send(sending)
            if blocked and not held_back:
                self.log.warning("generate: verification is behind (%d answers waiting for verdicts, limit %d): "
                                 "admitting no new query until it catches up", self._verifying, settings.max_verify_queue)
            held_back = blocked
            if backlog != (not exhausted or bool(due)):
                backlog = not backlog
                self.model.set_backlog(backlog)
            progress.track(self._generating, self._verifying, held_back, backlog)
            if exhausted and not due and not self._generating and not self._verifying:
                progress.add_engine_sample(self.model.engine_stats())
                progress.stop()
                progress.log(self.log)
                return
            for entry in self._handle_events(due):
                yield entry.key, final_trace(entry.query, settings.teacher, [entry.attempts[i] for i in sorted(entry.attempts)],
                                             self.lanes is not None, progress)
            progress.track(self._generating, self._verifying, held_back, backlog)
            if time.perf_counter() - last_log >= settings.log_every_s:
                last_log = time.perf_counter()
                progress.add_engine_sample(self.model.engine_stats())
                progress.log(self.log)

    def _open(self, key: Key, query: Query) -> _Query[Key]:
        settings = self.settings
        conversation = build_conversation(query, settings.system_prompt)
        limit = attempt_limit(self.model, conversation, self.lanes is not None, settings.max_attempts)
        strategy = strategy_for(settings.strategy, settings.teacher, query.category)
        return _Query(key, query, conversation, limit, strategy)

    def _wave(self, entry: _Query[Key]) -> list[_Request[Key]]:
        entry.wave = entry.strategy.wave(len(entry.attempts), entry.max_attempts)
        seed = self.settings.base_seed, entry.query.id, self.settings.teacher
        return [_Request(entry, index, attempt_seed(*seed, index)) for index in entry.wave]

    def _send(self, requests: list[_Request[Key]]) -> None:
        """Hand the backend every request due now as one group (an engine adds them in one step)."""
        if not requests:
            return
        futures = self.model.submit_many([(r.entry.conversation, r.seed) for r in requests], self.settings.sampling)
        self._generating += len(requests)
        for request, future in zip(requests, futures):
            future.add_done_callback(lambda done, r=request: self._events.put(("generated", done, r)))

    def _handle_events(self, due: deque[_Request[Key]]) -> list[_Query[Key]]:
        """Wait for at least one completion, handle all that are in; return the queries that became final."""
        final: list[_Query[Key]] = []
        try:
            events = [self._events.get(timeout=self.settings.log_every_s)]
        except queue.Empty:
            return final
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                break
        for kind, future, request in events:
            if kind == "generated":
                self._generating -= 1
                request.completion = future.result()
                self.progress.add_attempt(request.completion.completion_tokens)
                if self.lanes is None:
                    self._record(request, None, due, final)
                    continue
                verdict_future = self.lanes.submit(request.entry.query, request.completion.text)
                self._verifying += 1
                verdict_future.add_done_callback(lambda done, r=request: self._events.put(("verified", done, r)))
            else:
                self._verifying -= 1
                self._record(request, future.result(), due, final)
        return final

    def _record(self, request: _Request[Key], verdict: Verdict | None, due: deque[_Request[Key]],
                final: list[_Query[Key]]) -> None:
        entry = request.entry
        assert request.completion is not None
        entry.attempts[request.index] = make_attempt(request.index, request.seed, request.completion, verdict,
                                                     self.settings.threshold)
        if any(index not in entry.attempts for index in entry.wave):
            return
        passed = self.lanes is None or any(a.passed for a in entry.attempts.values())
        if passed or len(entry.attempts) >= entry.max_attempts:
            final.append(entry)
        else:
            due.extend(self._wave(entry))
