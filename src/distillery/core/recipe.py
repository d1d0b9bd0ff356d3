"""Recipes: one YAML per run, typed and validated before anything runs.

A recipe names the run directory, the shard count, the executor, the teachers and an ordered mapping of
steps. Each step is a registered stage type (the step's name, or its `type:` field) with that stage's own
typed config. Every error names the file, the field (and its line) and what was expected.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError

from distillery.core.config import (
    InputPath,
    OutputPath,
    StrictModel,
    format_validation_error,
    read_yaml,
    yaml_line_index,
)
from distillery.core.lineage import SEPARATOR, Lineage
from distillery.core.stage import Stage, StageConfig, StepView, stage_names, stage_type
from distillery.core.teachers import Resources, TeacherConfig


class RecipeError(ValueError):
    """A recipe that cannot run: says where (file, field, line) and what was expected."""


class NoLineageData(KeyError):
    """A step has no data for a lineage (a teacher's data at the variants step, a variant before it)."""


class ExecutorConfig(StrictModel):
    kind: Literal["local", "slurm"] = Field("local", description="local: this machine; slurm: submitit job arrays.")
    workers: int = Field(1, ge=1, description="Local only: shards run at once (1 = in this process).")
    profile: InputPath | None = Field(None, description="Cluster profile YAML (partition, account, qos, gres per job kind).")
    array_parallelism: int = Field(256, ge=1, description="SLURM only: most array tasks running at once (%N).")
    submitit_dir: OutputPath | None = Field(None, description="Where submitit keeps job files; defaults to <run>/_submitit.")


class StepSpec(StrictModel):
    """One validated step of the recipe."""

    step: str
    type: str
    config: StageConfig
    resources: Resources

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class Recipe(StrictModel):
    name: str = Field(description="Run name, shown in status and reports.")
    run_dir: OutputPath = Field(description="Run directory; created on first run.")
    num_shards: int = Field(1, ge=1, description="Shards per step (array size).")
    seed: int = Field(0, description="Base seed; every sample's seed derives from it and the record id.")
    compress: bool = Field(False, description="Write shards as .jsonl.gz.")
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    teachers: list[TeacherConfig] = Field(default_factory=list)
    plugins: list[str] = Field(default_factory=list, description="Python modules to import first: they register extra stage types.")
    steps: list[StepSpec] = Field(default_factory=list, exclude=True)
    source: str = Field("", exclude=True)
    raw: dict[str, Any] = Field(default_factory=dict, exclude=True)
    warnings: list[str] = Field(default_factory=list, exclude=True)
    """What loading without the path check let pass (unset environment variables), for `plan` to show."""

    def step(self, name: str) -> StepSpec:
        for spec in self.steps:
            if spec.step == name:
                return spec
        raise KeyError(f"recipe {self.source} has no step {name!r}; it has {[s.step for s in self.steps]}")

    def teacher(self, name: str) -> TeacherConfig:
        """The teacher of a teacher name or of a lineage "<teacher>+<variant>"."""
        base = Lineage.parse(name).teacher
        for teacher in self.teachers:
            if teacher.name == base:
                return teacher
        raise KeyError(f"recipe {self.source} has no teacher {base!r}")

    @functools.cached_property
    def _lineages(self) -> tuple[int, list[str]] | None:
        """(index of the step that derives variant lineages, those lineages), or None when no step does."""
        for index, spec in enumerate(self.steps):
            derived = stage_type(spec.type).derived_lineages(spec.config, [t.name for t in self.teachers])
            if derived is not None:
                return index, derived
        return None

    def teachers_of(self, step: str) -> list[str | None]:
        """Lineages a step runs for: a single None for steps that do not run per teacher; else the teachers, and
        from the step that derives dataset variants on, each variant lineage "<teacher>+<variant>" too (that step
        itself runs only for the variants). Variant lineages follow their teacher."""
        if not stage_type(self.step(step).type).per_teacher:
            return [None]
        teachers: list[str | None] = [t.name for t in self.teachers]
        if self._lineages is None:
            return teachers
        index, derived = self._lineages
        position = [s.step for s in self.steps].index(step)
        if position < index:
            return teachers
        if position == index:
            return list(derived)
        return [lineage for t in teachers
                for lineage in [t, *(d for d in derived if Lineage.parse(d).teacher == t)]]

    def has_data(self, step: str, lineage: str | None) -> bool:
        """Whether `step` holds data for `lineage` (its own, its teacher's, or shared by every lineage)."""
        lineages = self.teachers_of(step)
        return (lineage in lineages or lineages == [None]
                or (lineage is not None and Lineage.parse(lineage).teacher in lineages))

    def source_lineage(self, step: str, lineage: str | None) -> str | None:
        """Which of its lineages `step` runs for `lineage`'s data: the lineage itself, else its teacher (steps before
        the variants), else None (a step that is not per teacher). `NoLineageData` when it has none for it."""
        lineages = self.teachers_of(step)
        if lineage in lineages:
            return lineage
        if lineage is not None and Lineage.parse(lineage).teacher in lineages:
            return Lineage.parse(lineage).teacher
        if lineages == [None]:
            return None
        raise NoLineageData(f"step {step!r} has no data for {lineage!r}")

    def previous_step(self, name: str, lineage: str | None = None) -> str | None:
        """The step whose kept records feed step `name` of `lineage`: the nearest earlier step that has this
        lineage's data (a teacher's data skips the variants step, which runs only for variants)."""
        names = [s.step for s in self.steps]
        for candidate in reversed(names[: names.index(name)]):
            if lineage is None or self.has_data(candidate, lineage):
                return candidate
        return None

    def input_lineages(self, step: str, lineage: str | None) -> list[str | None]:
        """The lineages of the previous step that step `step` of `lineage` reads: its own, its teacher's, the one
        lineage of a step that is not per teacher, or all of them (a shared step after per-teacher ones)."""
        previous = self.previous_step(step, lineage)
        if previous is None:
            return []
        if not self.has_data(previous, lineage):
            return self.teachers_of(previous)
        return [self.source_lineage(previous, lineage)]

    def build_stage(self, step: str, lineage: str | None = None) -> Stage:
        spec = self.step(step)
        view = StepView(step=step, config=spec.config, teacher=self.teacher(lineage) if lineage else None,
                        num_shards=self.num_shards, seed=self.seed, compress=self.compress,
                        input_step=self.previous_step(step, lineage),
                        variant=Lineage.parse(lineage).variant if lineage else None)
        return stage_type(spec.type)(view)


def parse_recipe(data: dict[str, Any], source: str = "<recipe>", base_dir: Path | None = None,
                 check_paths: bool = True, text: str | None = None) -> Recipe:
    lines = yaml_line_index(text) if text else {}
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    context = {"base_dir": base_dir or Path.cwd(), "check_paths": check_paths}
    raw_steps = data.get("steps") or {}
    if not isinstance(raw_steps, dict):
        raise RecipeError(f"{source}:{lines.get(('steps',), '?')}: steps: expected a mapping of step name -> config")
    top = {k: v for k, v in data.items() if k != "steps"}
    try:
        recipe = Recipe.model_validate(top, context=context)
    except ValidationError as error:
        raise RecipeError(format_validation_error(source, error, (), lines)) from None
    for module in recipe.plugins:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise RecipeError(f"{source}:{lines.get(('plugins',), '?')}: plugins: cannot import {module!r}: {error}") from None
    known = stage_names()
    errors: list[str] = []
    steps: list[StepSpec] = []
    for step_name, body in raw_steps.items():
        body = dict(body or {})
        kind = body.pop("type", step_name)
        where = f"{source}:{lines.get(('steps', step_name), '?')}"
        if kind not in known:
            errors.append(f"{where}: steps.{step_name}: unknown stage type {kind!r}; expected one of {known}")
            continue
        resources_raw = body.pop("resources", {})
        try:
            config = stage_type(kind).Config.model_validate(body, context=context)
            resources = Resources.model_validate(resources_raw or {})
        except ValidationError as error:
            errors.append(format_validation_error(source, error, ("steps", step_name), lines))
            continue
        steps.append(StepSpec(step=step_name, type=kind, config=config, resources=resources))
    if errors:
        raise RecipeError("\n".join(errors))
    if not steps:
        raise RecipeError(f"{source}: steps: expected at least one step")
    teacher_names = [t.name for t in recipe.teachers]
    if len(set(teacher_names)) != len(teacher_names):
        raise RecipeError(f"{source}: teachers: names must be unique, got {teacher_names}")
    if any(SEPARATOR in name for name in teacher_names):
        raise RecipeError(f"{source}: teachers: a name may not contain {SEPARATOR!r} (it separates a teacher "
                          f"from a dataset variant), got {teacher_names}")
    served = [t.name for t in recipe.teachers if t.serve is not None]
    if served and recipe.executor.kind != "slurm":
        raise RecipeError(f"{source}: teachers {served} have serve: their servers are SLURM jobs, so "
                          f"executor.kind must be slurm (got {recipe.executor.kind})")
    for index, spec in enumerate(steps):
        before = [(s.step, s.type) for s in steps[:index]]
        for problem in stage_type(spec.type).check_placement(spec.config, before, teacher_names):
            errors.append(f"{source}:{lines.get(('steps', spec.step), '?')}: steps.{spec.step}: {problem}")
    if sum(stage_type(s.type).derived_lineages(s.config, teacher_names) is not None for s in steps) > 1:
        errors.append(f"{source}: steps: at most one step may derive dataset variants")
    if errors:
        raise RecipeError("\n".join(errors))
    if any(stage_type(s.type).per_teacher for s in steps) and not recipe.teachers:
        raise RecipeError(f"{source}: teachers: per-teacher steps need at least one teacher")
    recipe.steps = steps
    recipe.source = source
    recipe.raw = data
    recipe.warnings = [f"environment variable {variable} is not set: planned as /<unset {variable}> in "
                       f"{len(uses)} path{'s' if len(uses) > 1 else ''} ({uses[0]}{', ...' if len(uses) > 1 else ''})"
                       for variable, uses in context.get("unset_variables", {}).items()]
    return recipe


def load_recipe(path: Path | str, overrides: list[str] | None = None, check_paths: bool = True) -> Recipe:
    """Read and validate a recipe file; `overrides` are `dotted.key=yaml_value` strings."""
    path = Path(path)
    data, text = read_yaml(path, "recipe file", RecipeError)
    for override in overrides or []:
        key, _, value = override.partition("=")
        if not _:
            raise RecipeError(f"override {override!r}: expected dotted.key=value")
        target = data
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = yaml.safe_load(value)
        text = None  # line numbers no longer match the file
    return parse_recipe(data, source=str(path), base_dir=Path.cwd(), check_paths=check_paths, text=text)


def snapshot(recipe: Recipe) -> dict[str, Any]:
    """The recipe with every path made absolute, as written to <run>/recipe.yaml for tasks to read."""
    data = recipe.model_dump(mode="json", exclude_none=True)
    data["steps"] = {}
    for spec in recipe.steps:
        body = spec.config.model_dump(mode="json", exclude_none=True)
        if spec.type != spec.step:
            body["type"] = spec.type
        body["resources"] = spec.resources.model_dump(mode="json", exclude_none=True)
        data["steps"][spec.step] = body
    return data
