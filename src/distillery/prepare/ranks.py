"""The MPI communicator of a multi-rank task (mpi4py; under SLURM `srun --mpi=pmi2`, locally `mpiexec -n N`).

The rank and world size come from the ShardContext, as for every stage; MPI only has to agree with them.
"""

from __future__ import annotations

from typing import Any

from distillery.core.stage import ShardContext


def communicator(ctx: ShardContext) -> Any | None:
    """None for a one-rank task, else MPI.COMM_WORLD after checking it matches the task's rank and world size."""
    if ctx.world_size == 1:
        return None
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if (comm.Get_size(), comm.Get_rank()) != (ctx.world_size, ctx.rank):
        raise RuntimeError(
            f"{ctx.stage}: task is rank {ctx.rank} of {ctx.world_size} but MPI reports rank {comm.Get_rank()} of "
            f"{comm.Get_size()}: launch the ranks with `srun --mpi=pmi2` (SLURM) or `mpiexec -n {ctx.world_size}`")
    return comm
