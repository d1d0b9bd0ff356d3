"""Run one task of a run as MPI ranks: `srun --mpi=pmi2 python -m distillery.prepare.mpi_task RUN STEP PHASE SHARD`.

The launcher's job is only to tell `run_task` its rank and world size, which it reads from MPI.COMM_WORLD (under
SLURM that is PMI2 from srun; locally `mpiexec -n N` of the mpich wheel). Everything else comes from the run.
"""

from __future__ import annotations

import argparse
import logging

from distillery.core.runner import run_task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distillery.prepare.mpi_task", description=__doc__)
    parser.add_argument("run_dir", help="run directory (holds recipe.yaml)")
    parser.add_argument("step", help="step name in the recipe, e.g. decontaminate")
    parser.add_argument("phase", choices=["scan", "merge", "process", "task"], help="phase of the step")
    parser.add_argument("shard_index", type=int, help="shard to run")
    parser.add_argument("--teacher", default=None, help="teacher, for per-teacher steps")
    args = parser.parse_args(argv)
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{comm.Get_rank()} %(levelname)s %(name)s: %(message)s")
    run_task(args.run_dir, args.step, args.teacher, args.phase, args.shard_index, rank=comm.Get_rank(),
             world_size=comm.Get_size())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
