"""The keeper of a served teacher: a one-CPU job that lives as long as the teacher's client array.
`python -m distillery.executors.serve_keeper RUN_DIR TEACHER CLIENT_GROUP [--max-restarts N] [--poll-s S]`.

Every few seconds it reads the job ledger's states (one sacct call). A replica whose job ended (failed,
cancelled, timed out, its node lost) while clients still run is submitted again from its saved script, at most
`max_restarts` times; a preempted replica is requeued by the scheduler itself and left alone. Once every task of
the client group has ended (done or failed), every replica job ever submitted for the teacher is cancelled and
the keeper waits until accounting shows none of them live: no server outlives its step.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import subprocess
import sys
import time
from collections import Counter

from distillery.core.store import RunDir
from distillery.executors.sacct import LIVE_STATES, append_jobs, query_states, submitted_tasks
from distillery.executors.serve_jobs import sbatch, script_path
from distillery.serve.records import read_records, set_state

logger = logging.getLogger("distillery.executors.serve_keeper")


def replica_jobs(run: RunDir, teacher: str) -> list[str]:
    """Every job id ever submitted for the teacher's replicas (the ledger keeps them all)."""
    group = f"serve/{teacher}:replica"
    entries = [json.loads(line) for line in run.jobs_file().read_text(encoding="utf-8").splitlines() if line.strip()]
    return [job_id for entry in entries if entry["group"] == group for job_id in entry["job_ids"]]


def still_queued(job_ids: list[str]) -> list[str]:
    """Those of the jobs that squeue still lists (pending, running or completing). The whole queue is read: squeue
    refuses a list of ids once one of them has left slurmctld's memory."""
    done = subprocess.run(["squeue", "--noheader", "--format=%i"], capture_output=True, text=True, timeout=60,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"squeue failed ({done.returncode}): {done.stderr.strip()[:300]}")
    return sorted(set(done.stdout.split()) & set(job_ids))


class Keeper:
    def __init__(self, run: RunDir, teacher: str, clients: str, max_restarts: int) -> None:
        self.run, self.teacher, self.clients, self.max_restarts = run, teacher, clients, max_restarts
        self.replicas = f"serve/{teacher}:replica"
        self.restarts: Counter[int] = Counter()

    def clients_ended(self, states: dict[tuple[str, int], str]) -> bool:
        tasks = [task for task in submitted_tasks(self.run) if task[0] == self.clients]
        return bool(tasks) and all(task in states and states[task] not in LIVE_STATES for task in tasks)

    def tend(self, states: dict[tuple[str, int], str]) -> None:
        """Resubmit replicas whose latest job ended."""
        records = {record.index: record for record in read_records(self.run, self.teacher)}
        for (group, index), state in sorted(states.items()):
            if group != self.replicas or state in LIVE_STATES:
                continue
            if index in records and records[index].state in ("starting", "healthy"):
                set_state(self.run, records[index], "failed")  # killed without a word (SIGKILL, node lost)
            if self.restarts[index] >= self.max_restarts:
                continue
            self.restarts[index] += 1
            job_id = sbatch(script_path(self.run, self.teacher, index).read_text())
            append_jobs(self.run, {"group": self.replicas, "job_ids": [job_id], "shards": [index],
                                   "submitted": time.time()})
            logger.warning("%s replica %d ended (%s): resubmitted as %s (restart %d of %d)", self.teacher, index,
                           state, job_id, self.restarts[index], self.max_restarts)
            if self.restarts[index] == self.max_restarts:
                logger.error("%s replica %d: that was its last restart; if it dies again it stays down",
                             self.teacher, index)

    def stop_all(self, poll_s: float) -> None:
        ids = replica_jobs(self.run, self.teacher)
        logger.info("%s ended: cancelling the %s replica job(s) %s", self.clients, self.teacher, ", ".join(ids))
        subprocess.run(["scancel", *ids], capture_output=True, text=True, timeout=60, check=False)
        while still_queued(ids):  # accounting says CANCELLED at once; the queue holds a job until it is gone
            time.sleep(poll_s)
        for record in read_records(self.run, self.teacher):
            if record.state in ("starting", "healthy"):
                set_state(self.run, record, "stopped")
        logger.info("%s: no replica job left", self.teacher)

    def run_until_done(self, poll_s: float) -> None:
        while True:
            states = query_states(self.run)
            if self.clients_ended(states):
                self.stop_all(poll_s)
                return
            self.tend(states)
            time.sleep(poll_s)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per health or metrics poll
    parser = argparse.ArgumentParser(prog="python -m distillery.executors.serve_keeper", description=__doc__)
    parser.add_argument("run_dir")
    parser.add_argument("teacher")
    parser.add_argument("clients", help="the client group's key, e.g. generate/deepseek-r1:process")
    parser.add_argument("--max-restarts", type=int, default=3)
    parser.add_argument("--poll-s", type=float, default=5.0)
    args = parser.parse_args(argv)
    # USR2 warns of a preemption or the time limit; the scheduler requeues this job and the replicas keep running.
    signal.signal(signal.SIGUSR2, lambda signum, frame: logger.warning("USR2: the scheduler will stop the keeper"))
    Keeper(RunDir(args.run_dir), args.teacher, args.clients, args.max_restarts).run_until_done(args.poll_s)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
