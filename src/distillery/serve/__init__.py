"""Managed teacher servers: a teacher with `serve:` runs as R replicas of the engine's HTTP server, each its own
SLURM job (`jobs`), started on every node of the replica by `replica` and watched for health; its endpoint and
state go to the run directory (`records`). The generate array talks to every live replica (`client`: a query's
attempts stick to one replica, queries spread over all, a dead replica's requests move to the others). A small
keeper job (`keeper`) requeues a replica that dies and cancels them all when the generate array ends."""
