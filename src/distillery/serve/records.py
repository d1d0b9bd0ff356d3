"""Where a served teacher's replicas are: one small JSON file per replica in the run directory, written by the
replica's job (atomic: a reader never sees half a record) and read by clients, the keeper and `status`."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Literal

from distillery.core.store import RunDir, read_json, write_json

ReplicaState = Literal["starting", "healthy", "stopped", "failed"]


@dataclass
class ReplicaRecord:
    teacher: str
    index: int
    job_id: str
    host: str
    port: int
    state: ReplicaState
    since: float
    """When the replica entered this state (epoch seconds)."""

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible API root clients use."""
        return f"http://{self.host}:{self.port}/v1"


def write_record(run: RunDir, record: ReplicaRecord) -> None:
    path = run.serve_dir(record.teacher) / f"replica-{record.index}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, asdict(record))


def set_state(run: RunDir, record: ReplicaRecord, state: ReplicaState) -> ReplicaRecord:
    record.state, record.since = state, time.time()
    write_record(run, record)
    return record


def read_records(run: RunDir, teacher: str) -> list[ReplicaRecord]:
    """Every replica that ever wrote a record, by index."""
    records = []
    for path in sorted(run.serve_dir(teacher).glob("replica-*.json")):
        try:
            records.append(ReplicaRecord(**read_json(path)))
        except FileNotFoundError:  # removed between listing and reading
            continue
    return sorted(records, key=lambda record: record.index)


def healthy(run: RunDir, teacher: str) -> list[ReplicaRecord]:
    return [record for record in read_records(run, teacher) if record.state == "healthy"]
