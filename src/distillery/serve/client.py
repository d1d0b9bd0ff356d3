"""The generate array's view of a served teacher: one `ChatModel` over every healthy replica.

Each replica gets its own OpenAI-compatible client (llm/openai_http.py: adaptive concurrency per replica).
A request goes to the replica that rendezvous hashing picks for its conversation among the live ones: every
attempt of a query has the same prompt, so it lands on the same replica and reuses its cached prefix, while
different queries spread evenly. When a replica fails a request in transit (connection refused or dropped,
timeout, 5xx) after its client's few quick retries, that replica is set aside for a while and the request goes
to the next replica in the same hash order; when none is live the request waits for one (the keeper restarts
dead replicas) until `retry_for_s` runs out. A request is answered once: the caller sees one completion or one
error, whichever replica served it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import Counter
from concurrent.futures import Future
from typing import Any

from distillery.core.store import RunDir
from distillery.core.teachers import TeacherConfig
from distillery.llm.openai_http import OpenAIChatModel, is_transient
from distillery.llm.options import check_options
from distillery.llm.protocol import Completion, Conversation, Sampling, SubmitsOneByOne
from distillery.serve.records import ReplicaRecord, healthy

logger = logging.getLogger(__name__)


def rank_replicas(key: str, replicas: list[ReplicaRecord]) -> list[ReplicaRecord]:
    """Rendezvous order for one key: the first is its home replica, the next where it goes if that one is away;
    adding or losing a replica moves only the keys whose home it is."""
    def weight(record: ReplicaRecord) -> bytes:
        return hashlib.blake2b(f"{record.index}\0{key}".encode(), digest_size=8).digest()
    return sorted(replicas, key=weight, reverse=True)


class ServedChatModel(SubmitsOneByOne):
    """Requests balanced over a served teacher's healthy replicas, read from the run directory."""

    def __init__(self, run: RunDir, teacher: TeacherConfig, refresh_s: float = 3.0, set_aside_s: float = 30.0,
                 wait_poll_s: float = 2.0) -> None:
        assert teacher.serve is not None, f"teacher {teacher.name} is not served"
        self.run, self.teacher, self.name = run, teacher, teacher.name
        self.options: dict[str, Any] = dict(teacher.options)
        self.options.pop("api_key_env", None)  # distillery's own servers take no key
        check_options(teacher, OpenAIChatModel, self.options, {"model", "name", "api_key", "base_url"})
        self.retry_for_s = max(float(self.options.get("retry_for_s", 900.0)), teacher.serve.start_timeout_s)
        # A replica's own client retries briefly; longer outages are this class's to route around.
        self.options.update(retry_for_s=min(float(self.options.get("retry_for_s", 900.0)), 10.0), max_retries=2)
        self.refresh_s, self.set_aside_s, self.wait_poll_s = refresh_s, set_aside_s, wait_poll_s
        self._lock = threading.Lock()
        self._clients: dict[str, OpenAIChatModel] = {}
        self._live: list[ReplicaRecord] = []
        self._read_at = 0.0
        self._away: dict[int, float] = {}  # replica index -> set aside until
        self.requests: Counter[int] = Counter()
        self.failovers = 0
        self._wait_for_first(teacher.serve.start_timeout_s)

    def _wait_for_first(self, timeout_s: float) -> None:
        deadline = time.time() + timeout_s
        while not self._replicas():
            if time.time() > deadline:
                raise RuntimeError(f"teacher {self.teacher.name}: no replica became healthy in {timeout_s:.0f}s "
                                   f"(records in {self.run.serve_dir(self.teacher.name)}; served teachers run under "
                                   "the slurm executor, which starts their servers)")
            time.sleep(self.wait_poll_s)
            self._read_at = 0.0
        logger.info("%s: %d healthy replica(s): %s", self.teacher.name, len(self._live),
                    ", ".join(record.base_url for record in self._live))

    def _replicas(self) -> list[ReplicaRecord]:
        """Healthy replicas not set aside (all healthy ones if every one is set aside), re-read every few seconds."""
        with self._lock:
            now = time.time()
            if now - self._read_at > self.refresh_s:
                self._live, self._read_at = healthy(self.run, self.teacher.name), now
            present = [record for record in self._live if self._away.get(record.index, 0.0) <= now]
            return present or list(self._live)

    def _client(self, record: ReplicaRecord) -> OpenAIChatModel:
        with self._lock:
            if record.base_url not in self._clients:
                self._clients[record.base_url] = OpenAIChatModel(self.teacher.model, base_url=record.base_url,
                                                                 name=f"{self.teacher.name}#{record.index}",
                                                                 **self.options)
            return self._clients[record.base_url]

    def submit(self, conversation: Conversation, sampling: Sampling, seed: int | None) -> Future[Completion]:
        answer: Future[Completion] = Future()
        key = json.dumps(conversation, sort_keys=True)
        self._send(answer, key, conversation, sampling, seed, time.time() + self.retry_for_s)
        return answer

    def _send(self, answer: Future[Completion], key: str, conversation: Conversation, sampling: Sampling,
              seed: int | None, deadline: float) -> None:
        ranked = rank_replicas(key, self._replicas())
        if not ranked:
            if time.time() > deadline:
                answer.set_exception(RuntimeError(f"teacher {self.teacher.name}: no healthy replica"))
                return
            self._read_at = 0.0
            threading.Timer(self.wait_poll_s, self._send,
                            (answer, key, conversation, sampling, seed, deadline)).start()
            return
        record = ranked[0]
        sent = self._client(record).submit(conversation, sampling, seed)
        sent.add_done_callback(lambda done: self._settle(done, record, answer, key, conversation, sampling, seed,
                                                         deadline))

    def _settle(self, done: Future[Completion], record: ReplicaRecord, answer: Future[Completion], key: str,
                conversation: Conversation, sampling: Sampling, seed: int | None, deadline: float) -> None:
        error = done.exception()
        if error is None:
            with self._lock:
                self.requests[record.index] += 1
            answer.set_result(done.result())
            return
        if not is_transient(error) or time.time() > deadline:
            answer.set_exception(error)
            return
        with self._lock:
            self.failovers += 1
            self._away[record.index] = time.time() + self.set_aside_s
            self._read_at = 0.0
        logger.warning("%s: replica %d failed a request (%s): set aside for %.0fs, sending it elsewhere",
                       self.teacher.name, record.index, type(error).__name__, self.set_aside_s)
        self._send(answer, key, conversation, sampling, seed, deadline)

    def chat(self, conversations: list[Conversation], sampling: Sampling,
             seeds: list[int] | None = None) -> list[Completion]:
        futures = [self.submit(c, sampling, seeds[i] if seeds else None) for i, c in enumerate(conversations)]
        return [future.result() for future in futures]

    def engine_stats(self) -> dict[str, float]:
        """Requests answered per replica, failovers, and the replica clients' retries and concurrency summed."""
        with self._lock:
            clients = list(self._clients.values())
            stats: dict[str, float] = {f"replica_{index}_requests": float(n) for index, n in self.requests.items()}
            stats["replica_failovers"] = float(self.failovers)
        for client in clients:
            for name, value in client.engine_stats().items():
                if name in ("transient_retries", "concurrency_limit", "concurrency_peak"):
                    stats[name] = stats.get(name, 0.0) + value
        return stats

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
