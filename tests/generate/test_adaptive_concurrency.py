"""The AIMD limit of the HTTP client (and its line in `status`) against simulated servers (the real `vllm serve` is in
test_openai_http.py and benchmarks/bench_http_concurrency.py): a server with a fixed number of batch slots and a
queue behind them, and one that answers 429 above a rate limit, as hosted APIs do."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from distillery.core.plan import build_groups
from distillery.core.recipe import parse_recipe
from distillery.llm.adaptive import AdaptiveConcurrency
from distillery.ops.status import GroupStatus, _add_stats, render_status


class Overloaded(Exception):
    """The simulated server's 429."""


class QueueingServer:
    """`slots` requests are served at once, `service_s` each; the rest wait in the server's queue, or, past
    `reject_above` accepted requests, are turned away at once."""

    def __init__(self, slots: int, service_s: float, reject_above: int | None = None) -> None:
        self.slots = asyncio.Semaphore(slots)
        self.service_s, self.reject_above = service_s, reject_above
        self.in_flight = self.most_in_flight = self.accepted = self.rejected = 0

    async def request(self) -> int:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.reject_above is not None and self.accepted >= self.reject_above:
                self.rejected += 1
                await asyncio.sleep(self.service_s / 10)
                raise Overloaded
            self.accepted += 1
            try:
                async with self.slots:
                    await asyncio.sleep(self.service_s)
            finally:
                self.accepted -= 1
            return 10  # completion tokens
        finally:
            self.in_flight -= 1


async def drive(limit: AdaptiveConcurrency, server: QueueingServer, requests: int) -> int:
    """Send `requests` at once through the limit, retrying rejected ones; returns how many were rejected."""
    async def one() -> None:
        while True:
            try:
                await limit.run(server.request, lambda tokens: tokens)
                return
            except Overloaded:
                await asyncio.sleep(0.001)
    await asyncio.gather(*(one() for _ in range(requests)))
    return server.rejected


def test_limit_rises_from_its_start_while_latency_holds() -> None:
    limit = AdaptiveConcurrency(64, lambda e: isinstance(e, Overloaded), start=2)
    server = QueueingServer(slots=64, service_s=0.02)
    asyncio.run(drive(limit, server, 400))
    assert limit.peak == 64 and server.most_in_flight == 64  # never above the ceiling
    # A loaded test machine can stall the event loop long enough for a latency cut now and then (a tenth each).
    assert limit.decreases["overload"] == 0 and limit.limit >= 32


def test_limit_backs_off_when_the_server_queue_grows() -> None:
    limit = AdaptiveConcurrency(128, lambda e: isinstance(e, Overloaded), start=2)
    server = QueueingServer(slots=8, service_s=0.02)
    asyncio.run(drive(limit, server, 600))
    assert limit.decreases["latency"] >= 1 and limit.decreases["overload"] == 0
    # It found the server's 8 slots and saws around twice that (latency doubles once as many wait as are
    # served), far under its ceiling.
    assert limit.peak >= 8 and int(limit.limit) < 48


def test_limit_follows_the_servers_own_queue_when_it_reports_one() -> None:
    """The server says how many requests wait for a batch slot (vLLM's num_requests_waiting): the limit fills the
    slots and stops a little above them, whatever the latency per token does."""
    limit = AdaptiveConcurrency(128, lambda e: isinstance(e, Overloaded), start=2, latency_tolerance=1.01)
    server = QueueingServer(slots=8, service_s=0.02)

    async def run() -> None:
        async def report() -> None:
            while True:
                limit.observe_queue(max(server.in_flight - 8, 0))
                await asyncio.sleep(0.005)
        reporter = asyncio.ensure_future(report())
        await drive(limit, server, 600)
        reporter.cancel()
    asyncio.run(run())
    assert limit.decreases["queue"] >= 1 and limit.decreases["latency"] == 0
    assert server.most_in_flight >= 8 and 8 <= int(limit.limit) < 24


def test_overload_halves_once_per_round_trip_and_the_limit_stays_under_the_rate_limit() -> None:
    limit = AdaptiveConcurrency(256, lambda e: isinstance(e, Overloaded), start=4, latency_tolerance=1e9)
    server = QueueingServer(slots=256, service_s=0.02, reject_above=20)
    rejected = asyncio.run(drive(limit, server, 800))
    assert limit.decreases["overload"] >= 1 and limit.peak < 64 and int(limit.limit) <= 30
    # One halving per round trip, not one per rejected request (they come in bursts).
    assert limit.decreases["overload"] < rejected


def test_a_fixed_limit_never_moves() -> None:
    limit = AdaptiveConcurrency(16, lambda e: isinstance(e, Overloaded), start=16, floor=16)
    server = QueueingServer(slots=2, service_s=0.01, reject_above=12)
    asyncio.run(drive(limit, server, 200))
    assert int(limit.limit) == 16 and server.most_in_flight == 16 and server.rejected > 0


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="floor"):
        AdaptiveConcurrency(4, lambda e: False, floor=8)


def test_status_shows_the_http_clients_concurrency(tmp_path: Path) -> None:
    (tmp_path / "q.jsonl").write_text("")
    group = next(iter(build_groups(parse_recipe({"name": "x", "run_dir": str(tmp_path), "steps": {
        "ingest": {"inputs": [{"path": str(tmp_path / "q.jsonl")}]}}}))))
    status = GroupStatus(group)
    for limit in (12, 20):  # two shards' stats, as the generate stage records them
        _add_stats(status, 0, {"tokens_per_s": 100.0, "engine_last": {"concurrency_limit": limit,
                                                                      "transient_retries": 0}})
    assert "rates: 100 tok/s, client concurrency 16" in render_status([status])
