"""Checking a model spec's backend options against what the backend's constructor takes."""

from __future__ import annotations

import inspect
from typing import Any

from distillery.llm.protocol import ModelSpec


class BackendConfigError(ValueError):
    """A teacher's backend options cannot build its model."""


def check_options(spec: ModelSpec, factory: Any, options: dict[str, Any], reserved: set[str]) -> None:
    """Unknown options are an error naming the teacher and what the backend accepts."""
    accepted = set(inspect.signature(factory).parameters) - reserved
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise BackendConfigError(f"teacher {spec.name!r} ({spec.backend}): unknown option(s) {unknown}; "
                                 f"expected some of {sorted(accepted)}")
