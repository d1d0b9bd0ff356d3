"""Fixtures of the query-preparation tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def embed_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Benchmark embeddings are computed once per session and shared by every run (the stage's cache_dir)."""
    return tmp_path_factory.mktemp("benchmark-embeddings")
