from __future__ import annotations

import subprocess
import sys

import pytest

from distillery.cli import main
from distillery.core.stage import stage_types


def test_help_lists_every_command() -> None:
    out = subprocess.run([sys.executable, "-m", "distillery.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("plan", "run", "submit", "status", "resume", "report", "export", "explain"):
        assert command in out


def test_explain_shows_each_config_field_with_its_description(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "ingest"]) == 0
    out = capsys.readouterr().out
    assert "inputs" in out and "Files to read" in out


def test_every_registered_stage_documents_every_field() -> None:
    undocumented = [f"{name}.{field}" for name, cls in stage_types().items()
                    for field, info in cls.Config.model_fields.items() if not info.description]
    assert undocumented == []


def test_explain_unknown_stage_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "no-such-stage"]) == 2
    assert "unknown stage" in capsys.readouterr().err
