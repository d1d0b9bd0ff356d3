"""Fixtures of the filter tests: a recipe with one teacher and its run directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillery.core.recipe import Recipe, TeacherConfig
from distillery.core.store import RunDir

TEACHER = "alpha"


@pytest.fixture
def recipe(tmp_path: Path) -> Recipe:
    return Recipe(name="filters-test", run_dir=tmp_path / "run", teachers=[TeacherConfig(name=TEACHER, model="none")])


@pytest.fixture
def run(recipe: Recipe) -> RunDir:
    return RunDir(recipe.run_dir)
