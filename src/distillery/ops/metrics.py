"""`distillery status --metrics FILE`: the status as a Prometheus text file for node-exporter's textfile collector
(name it `*.prom` in the collector's directory), written atomically so the collector never reads half a file.

Every series carries the run name and the step x teacher x phase it describes (`teacher=""` for a step that does
not run per teacher). Counts are gauges: they are recomputed from the run directory on every call.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from distillery.ops.status import GroupStatus

LABELS = ["run", "step", "teacher", "phase"]

RECORDS = {"in": "inputs", "kept": "kept", "rejected": "rejected", "quarantined": "quarantined",
           "in_journals": "partial_items"}
"""distillery_records_<name> -> the GroupStatus count it reports."""

ENGINE = {"tokens_per_second": "tokens_per_s", "idle_ratio": "engine_idle_fraction",
          "kv_cache_usage_ratio": "kv_cache_usage_mean"}
"""distillery_engine_<name> -> the generation shards' stat it reports (mean over finished shards)."""


class StatusCollector(Collector):
    """The metric families of one status view."""

    def __init__(self, run_name: str, statuses: list[GroupStatus], now: float | None = None) -> None:
        self.run_name = run_name
        self.statuses = statuses
        self.now = time.time() if now is None else now

    def collect(self) -> Iterator[GaugeMetricFamily]:
        shards = GaugeMetricFamily("distillery_shards", "Shards of a step x teacher x phase, by state",
                                   labels=[*LABELS, "state"])
        records = {name: GaugeMetricFamily(f"distillery_records_{name}", f"Records {name.replace('_', ' ')} "
                                           "(finished shards; in_journals: items of unfinished ones)", labels=LABELS)
                   for name in RECORDS}
        rate = GaugeMetricFamily("distillery_items_per_second", "Input items per task-second over finished shards",
                                 labels=LABELS)
        eta = GaugeMetricFamily("distillery_eta_seconds", "Estimated task-seconds left (at the rate so far)",
                                labels=LABELS)
        engine = {name: GaugeMetricFamily(f"distillery_engine_{name}", f"Generation engine {name.replace('_', ' ')}"
                                          " (mean over finished shards)", labels=LABELS) for name in ENGINE}
        acceptance = GaugeMetricFamily("distillery_acceptance_ratio", "Share of finished queries with an accepted "
                                       "answer, by category", labels=[*LABELS, "category"])
        finished = GaugeMetricFamily("distillery_queries_finished", "Queries generation finished, by category",
                                     labels=[*LABELS, "category"])
        for status in self.statuses:
            group = status.group
            labels = [self.run_name, group.step, group.lineage or "", group.phase]
            for state, count in sorted(status.states.items()):
                shards.add_metric([*labels, state], count)
            for name, attribute in RECORDS.items():
                records[name].add_metric(labels, getattr(status, attribute))
            rate.add_metric(labels, status.throughput)
            if status.eta_s is not None:
                eta.add_metric(labels, status.eta_s)
            for name, stat in ENGINE.items():
                values = status.engine.get(stat)
                if values:
                    engine[name].add_metric(labels, sum(values) / len(values))
            for category, counts in sorted(status.acceptance.items()):
                finished.add_metric([*labels, category], counts["done"])
                if counts["done"]:
                    acceptance.add_metric([*labels, category], counts["accepted"] / counts["done"])
        updated = GaugeMetricFamily("distillery_status_timestamp_seconds", "When this file was written (Unix time)",
                                    labels=["run"])
        updated.add_metric([self.run_name], self.now)
        yield from (shards, *records.values(), rate, eta, *engine.values(), acceptance, finished, updated)


def write_metrics(path: Path, run_name: str, statuses: list[GroupStatus]) -> None:
    """Write the status as a Prometheus text file, atomically (a temporary file beside it, then a rename)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(run_name, statuses))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
