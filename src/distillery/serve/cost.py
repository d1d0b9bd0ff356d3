"""What a served teacher's servers cost for `plan --cost`: every GPU of every replica is held from the replica's
start until the teacher's generate array ends (the keeper cancels them then), busy or not."""

from __future__ import annotations

from distillery.core.teachers import TeacherConfig


def serving_gpus(teacher: TeacherConfig) -> int:
    """GPUs of all replicas together: the rate at which the clients' work is decoded."""
    serve = teacher.serve
    return serve.replicas * serve.nodes_per_replica * serve.gpus_per_node if serve else 0


def server_gpu_hours(teacher: TeacherConfig, client_wall_s: float, startup_s: float) -> float:
    """GPU-hours of the replica jobs while their clients run `client_wall_s`, plus each start-up (`startup_s`,
    loading the weights) once per replica."""
    return serving_gpus(teacher) * (client_wall_s + startup_s) / 3600
