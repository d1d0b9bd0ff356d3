"""What reaches the operator's terminal: distillery's own progress, not third-party output.

By default (quiet) the terminal gets a step's start and end lines, its tasks' progress, warnings of distillery
and errors of anyone, each error with the path of the log that holds the rest. Everything else (engine processes,
C libraries, Python warnings, third-party loggers, their progress bars) goes to the running task's log file: while a
task runs, this process's file descriptors 1 and 2 point at that file, so even output that bypasses Python (and
processes the task starts, such as vLLM's engine core) lands there. `-v` turns this off: everything on the terminal.

A record reaches the terminal when it is an error, a distillery warning, or carries `extra=CONSOLE` (a line) or
`extra=PROGRESS` (a progress report: redrawn in place on a terminal, at most one line per task every
PROGRESS_EVERY_S seconds when the output is a file or a pipe); never when it carries `extra=LOG_ONLY`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from tqdm import tqdm

CONSOLE = {"console": "line"}
PROGRESS = {"console": "progress"}
LOG_ONLY = {"console": "none"}
"""For a record the terminal hears of another way (a task's traceback, which its executor reports in one line)."""
PROGRESS_EVERY_S = 30.0
FULL_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TASK_LOGGER = "distillery.task."
"""Prefix of the per-task loggers (core.runner.shard_logger), which have a file handler of their own."""

T = TypeVar("T")


class _Console:
    quiet = False
    capture = False
    """Whether tasks' file descriptors are pointed at their logs (not where stderr has none, e.g. under pytest)."""
    terminal: IO[str] | None = None
    """A duplicate of the terminal's fd taken by `setup_console`; None: whatever sys.stderr is at the time."""
    task_log: Path | None = None


_console = _Console()


def is_quiet() -> bool:
    return _console.quiet


def console_stream() -> IO[str]:
    """Where distillery's own progress bars go: the terminal even while a task's output is captured."""
    return _console.terminal or sys.stderr


def _is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (ValueError, OSError):  # a closed or in-memory stream
        return False


def task_label(logger_name: str) -> str:
    """`generate/smol-warm` for a task logger `distillery.task.generate.smol-warm.shard-00000.process`."""
    if not logger_name.startswith(TASK_LOGGER):
        return ""
    step, teacher, *shard = logger_name[len(TASK_LOGGER):].split(".", 2)
    label = step if teacher == "-" else f"{step}/{teacher}"
    if shard and not shard[0].startswith("shard-00000") and shard[0] != "merge":
        label += f"#{int(shard[0].split('.')[0].removeprefix('shard-'))}"
    return label


class ConsoleHandler(logging.Handler):
    """Writes the records meant for the operator; progress is redrawn in place on a terminal, else throttled."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.last_progress: dict[str, float] = {}
        self.drawn = False

    def wanted(self, record: logging.LogRecord) -> bool:
        mark = getattr(record, "console", None)
        if mark is not None:
            return mark != "none"
        return record.levelno >= logging.ERROR or (
            record.levelno >= logging.WARNING and record.name.startswith("distillery"))

    def emit(self, record: logging.LogRecord) -> None:
        if not self.wanted(record):
            return
        try:
            label = task_label(record.name)
            text = record.getMessage()
            step = label.split("/")[0].split("#")[0]
            if label and text.startswith(f"{step}: "):  # "generate: 3/30 done" -> "generate/smol-warm: 3/30 done"
                text = f"{label}: {text[len(step) + 2:]}"
            elif label and not text.startswith(label):
                text = f"{label}: {text}"
            if record.levelno >= logging.WARNING:
                text = f"{record.levelname}: {text}"
                if record.exc_info and record.levelno >= logging.ERROR and _console.task_log is None:
                    text += "\n" + logging.Formatter().formatException(record.exc_info)
            if record.levelno >= logging.ERROR and _console.task_log is not None:
                text += f" (log: {_console.task_log})"
            line = f"{time.strftime('%H:%M:%S')} {text}"
            if getattr(record, "console", None) == "progress":
                self._progress(label or record.name, line)
            else:
                self._line(line)
        except Exception:  # noqa: BLE001 - logging must never take the run down
            self.handleError(record)

    def _line(self, line: str) -> None:
        stream = console_stream()
        if self.drawn:
            stream.write("\r\033[K")
            self.drawn = False
        stream.write(line + "\n")
        stream.flush()

    def _progress(self, key: str, line: str) -> None:
        stream = console_stream()
        if _is_tty(stream):
            stream.write("\r\033[K" + line[: os.get_terminal_size(stream.fileno()).columns - 1])
            stream.flush()
            self.drawn = True
            return
        now = time.monotonic()
        if now - self.last_progress.get(key, -PROGRESS_EVERY_S) >= PROGRESS_EVERY_S:
            self.last_progress[key] = now
            self._line(line)


class _NotTaskRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(TASK_LOGGER)


def setup_console(verbose: bool = False, level: int = logging.INFO) -> None:
    """Configure this process's logging for a terminal: quiet (the default) or everything (`verbose`)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.DEBUG if verbose else level)
    _console.quiet = not verbose
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FULL_FORMAT, datefmt="%H:%M:%S"))
        root.addHandler(handler)
        _console.terminal = None
        return
    # The terminal is a duplicate of fd 2 taken now, so it survives fd 2 being pointed at a task's log.
    if _console.terminal is not None:
        _console.terminal.close()
    try:
        terminal = os.dup(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # an in-memory stderr (pytest's capsys): nothing to redirect
        _console.terminal, _console.capture = None, False
    else:
        _console.terminal = os.fdopen(terminal, "w", buffering=1, encoding="utf-8", errors="replace")
        _console.capture = True
    root.addHandler(ConsoleHandler())
    logging.captureWarnings(True)


@contextmanager
def task_output(log_path: Path) -> Iterator[None]:
    """While quiet: this process's stdout, stderr and every record not of a task logger go to `log_path`."""
    if not (_console.quiet and _console.capture):
        yield
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FULL_FORMAT))
    handler.addFilter(_NotTaskRecords())
    root = logging.getLogger()
    root.addHandler(handler)
    _console.task_log = log_path
    try:
        yield
    finally:
        _console.task_log = None
        root.removeHandler(handler)
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, target in zip(saved, (1, 2)):
            os.dup2(fd, target)
            os.close(fd)


def progress_bar(iterable: Iterable[T] | None = None, disable: bool = False, **tqdm_args: Any) -> tqdm[T]:
    """A tqdm bar on the terminal (never in the captured log) that disappears when done; off a terminal it is not
    drawn (the task's progress records report instead)."""
    from tqdm import tqdm

    stream = console_stream()
    return tqdm(iterable, file=stream, leave=False, dynamic_ncols=True, disable=disable or not _is_tty(stream),
                **tqdm_args)
