"""The task groups a served teacher adds beside its client group: its replicas (one job each, the replica index as
shard index) and its keeper; `plan`, `plan --cost` and the executor's fit check see them like any group."""

from __future__ import annotations

from distillery.core.plan import TaskGroup
from distillery.core.recipe import Recipe
from distillery.core.teachers import Resources, TeacherConfig


def served_teacher(recipe: Recipe, group: TaskGroup) -> TeacherConfig | None:
    """The teacher whose servers this group's tasks are clients of, if distillery serves it."""
    if group.lineage is None or group.phase in ("scan", "merge"):
        return None
    stage = recipe.build_stage(group.step, group.lineage)
    teacher = stage.teacher if stage.serves_teacher else None
    return teacher if teacher is not None and teacher.serve is not None else None


def replica_group(teacher: TeacherConfig, depends_on: list[str]) -> TaskGroup:
    serve = teacher.serve
    assert serve is not None
    resources = Resources(cpus_per_task=serve.cpus_per_node, mem_gb=serve.mem_gb, gpus_per_node=serve.gpus_per_node,
                          nodes=serve.nodes_per_replica, time_min=serve.time_min)
    return TaskGroup("serve", teacher.name, "replica", list(range(serve.replicas)), serve.replicas, resources,
                     serve.job_kind, depends_on)


def keeper_group(teacher: TeacherConfig, depends_on: list[str]) -> TaskGroup:
    assert teacher.serve is not None
    resources = Resources(cpus_per_task=1, mem_gb=1, time_min=teacher.serve.time_min)
    return TaskGroup("serve", teacher.name, "keeper", [0], 1, resources, "cpu", depends_on)


def server_groups(recipe: Recipe, group: TaskGroup) -> list[TaskGroup]:
    """The replica and keeper groups a client group brings with it (none for a teacher distillery does not serve)."""
    teacher = served_teacher(recipe, group)
    if teacher is None:
        return []
    return [replica_group(teacher, group.depends_on), keeper_group(teacher, group.depends_on)]
