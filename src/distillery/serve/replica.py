"""What a replica job runs on each of its nodes (one srun task per node):
`python -m distillery.serve.replica RUN_DIR TEACHER INDEX -- <engine command with placeholders>`.

It fills the placeholders, starts the engine in its own session and stays its parent. Node 0 records the replica
in the run directory: `starting`, then `healthy` once /health answers and /v1/models lists the served model,
and `stopped` (cancelled: SIGTERM) or `failed` (the engine exited) at the end. USR2 (the scheduler's warning
before a preemption or the time limit) is logged and otherwise ignored: the scheduler requeues the job.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from types import FrameType

from distillery.core.store import RunDir
from distillery.serve.health import is_healthy
from distillery.serve.records import ReplicaRecord, set_state, write_record

logger = logging.getLogger("distillery.serve.replica")
STOP_GRACE_S = 30.0


def first_host() -> str:
    """Node 0 of the job: the master address of a multi-node replica."""
    nodes = os.environ.get("SLURM_JOB_NODELIST", "")
    if not nodes:
        return socket.gethostname()
    done = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True)
    return done.stdout.split()[0]


def fill(words: list[str], node_rank: int) -> list[str]:
    from distillery.models import resolve_model

    values = {"{node_rank}": str(node_rank)}
    if "{master_addr}" in words:
        values["{master_addr}"] = first_host()
    filled = [values.get(word, word) for word in words]
    if "{model}" in filled:
        model_at = filled.index("{model}")
        served_name = filled[filled.index("--served-model-name") + 1]
        filled[model_at] = resolve_model(served_name)
    return filled + (["--headless"] if node_rank > 0 else [])


def option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per health or metrics poll
    split = argv.index("--")
    run_dir, teacher, index = argv[0], argv[1], int(argv[2])
    node_rank = int(os.environ.get("SLURM_NODEID", "0"))
    command = fill(argv[split + 1:], node_rank)
    run = RunDir(run_dir)
    stopping: list[int] = []

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGUSR2, lambda signum, frame: logger.warning("USR2: the scheduler will stop this job soon"))
    logger.info("%s replica %d node %d: %s", teacher, index, node_rank, " ".join(command))
    engine = subprocess.Popen(command, start_new_session=True)
    record = None
    if node_rank == 0:
        port = int(option(command, "--port"))
        record = ReplicaRecord(teacher, index, os.environ.get("SLURM_JOB_ID", "local"), socket.gethostname(), port,
                               "starting", time.time())
        write_record(run, record)
    try:
        if record is not None:
            root = f"http://127.0.0.1:{record.port}"
            model = option(command, "--served-model-name")
            while engine.poll() is None and not is_healthy(root, model):
                time.sleep(2.0)
            if engine.poll() is None:
                set_state(run, record, "healthy")
                logger.info("%s replica %d healthy at %s", teacher, index, record.base_url)
        code = engine.wait()
        logger.error("%s replica %d node %d: the engine exited with %s", teacher, index, node_rank, code)
        if record is not None:
            set_state(run, record, "failed")
        return code or 1
    except KeyboardInterrupt:
        logger.info("%s replica %d node %d: stopping the engine", teacher, index, node_rank)
        os.killpg(engine.pid, signal.SIGTERM)
        try:
            engine.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(engine.pid, signal.SIGKILL)
            engine.wait()
        if record is not None:
            set_state(run, record, "stopped")
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
