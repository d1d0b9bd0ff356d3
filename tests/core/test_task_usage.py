"""A task's peak memory is its own even when tasks run one after another in one process (a local run)."""

from __future__ import annotations

import sys

import pytest

from distillery.core.task_usage import start_task, task_usage


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the per-task reset needs Linux's clear_refs")
def test_the_peak_of_one_task_does_not_carry_into_the_next() -> None:
    start_task()
    block = bytearray(256 * 2**20)
    block[:: 4096] = b"x" * len(block[:: 4096])  # touch every page, so it is resident
    big = task_usage()
    del block
    start_task()
    small = task_usage()
    assert big["peak_rss_mb"] - big["start_rss_mb"] >= 250
    assert small["peak_rss_mb"] < big["peak_rss_mb"] - 200
    assert small["cpu_s"] >= 0 and big["cpu_s"] > 0
