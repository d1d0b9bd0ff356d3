"""Imported by the local executor's fork server before it forks a task: the modules named in `DISTILLERY_PRELOAD`
(comma-separated), so that every model task starts with vLLM, torch or sentence-transformers already imported.

Their import-time output goes to `DISTILLERY_PRELOAD_LOG` (the console stays distillery's). A module that fails to
import here is left for the task to import, and report, itself.
"""

from __future__ import annotations

import importlib
import os
import traceback

PRELOAD_ENV = "DISTILLERY_PRELOAD"
LOG_ENV = "DISTILLERY_PRELOAD_LOG"


def warm(names: list[str], log: str) -> None:
    with open(log, "ab") as sink:
        saved = os.dup(1), os.dup(2)
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            for name in names:
                try:
                    importlib.import_module(name)
                except Exception:  # noqa: BLE001 - the task imports it again and reports the error where it belongs
                    sink.write(f"preload of {name} failed:\n{traceback.format_exc()}".encode())
        finally:
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)


warm([name for name in os.environ.get(PRELOAD_ENV, "").split(",") if name], os.environ.get(LOG_ENV, os.devnull))
