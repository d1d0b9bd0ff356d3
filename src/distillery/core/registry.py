"""The one registry idiom: a name -> `module:attribute` table, imported on first use.

Stages, executors, generation backends and verifiers are each registered this way, so `status` or `plan` never
pays for importing torch, vLLM or Megatron, and a plugin adds an entry with `add`.
"""

from __future__ import annotations

import importlib
from typing import Generic, TypeVar

T = TypeVar("T")


class LazyRegistry(Generic[T]):
    def __init__(self, kind: str, entries: dict[str, str]) -> None:
        self.kind = kind
        self._entries = dict(entries)
        self._loaded: dict[str, T] = {}

    def add(self, name: str, obj: T) -> None:
        """Register an object directly (plugins); a name taken by another object is an error."""
        known = self._loaded.get(name)
        if known is not None and known is not obj:
            raise ValueError(f"{self.kind} name {name!r} registered twice")
        self._loaded[name] = obj

    def names(self) -> list[str]:
        return sorted(set(self._entries) | set(self._loaded))

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._loaded

    def get(self, name: str) -> T:
        if name not in self._loaded:
            target = self._entries.get(name)
            if target is None:
                raise KeyError(f"unknown {self.kind} {name!r}; expected one of {self.names()}")
            module, _, attribute = target.partition(":")
            self._loaded[name] = getattr(importlib.import_module(module), attribute)
        return self._loaded[name]
