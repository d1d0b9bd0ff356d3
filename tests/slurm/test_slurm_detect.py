"""`distillery profile detect`: against recorded outputs of a multi-GPU cluster (tests/slurm/data/gpu-cluster,
written from the formats SLURM documents) and against the real development cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distillery.executors.slurm_detect import (
    COMMANDS,
    TODO,
    draft_profile,
    parse_gpus,
    parse_minutes,
    parse_oneliner,
    run_command,
)
from distillery.executors.slurm_profile import ProfileError, load_profile

DATA = Path(__file__).parent / "data" / "gpu-cluster"
RECORDED = {"config": "scontrol_show_config.txt", "partitions": "scontrol_show_partition.txt",
            "nodes": "scontrol_show_node.txt", "usable": "sinfo_partitions.txt"}


def recorded(replace: dict[str, str] | None = None):
    """A runner answering each command of `COMMANDS` with its recorded output (after text replacements)."""
    by_command = {tuple(command): (DATA / RECORDED[name]).read_text() for name, command in COMMANDS.items()}

    def run(command: list[str]) -> str:
        text = by_command[tuple(command)]
        for old, new in (replace or {}).items():
            text = text.replace(old, new)
        return text
    return run


@pytest.mark.parametrize(("value", "minutes"), [("UNLIMITED", None), ("30", 30), ("30:00", 30), ("12:00:00", 720),
                                                 ("2-00:00:00", 2880), ("1-12", 2160), ("0-00:30", 30),
                                                 ("00:10:30", 11)])
def test_time_limits_in_every_slurm_format(value: str, minutes: int | None) -> None:
    assert parse_minutes(value) == minutes


@pytest.mark.parametrize(("gres", "gpus"), [("gpu:h100:8(S:0-1)", ("h100", 8)), ("gpu:4", (None, 4)),
                                            ("nvme:1,gpu:a100:4(S:0-1)", ("a100", 4)), ("(null)", (None, 0)),
                                            ("gpu:a100:4(S:0,2-3),nvme:1", ("a100", 4))])
def test_gpu_gres_names_and_counts(gres: str, gpus: tuple[str | None, int]) -> None:
    assert parse_gpus(gres) == gpus


def test_oneliner_values_with_spaces_and_equals_signs() -> None:
    node = parse_oneliner((DATA / "scontrol_show_node.txt").read_text())[2]
    assert node["OS"] == "Linux 5.14.0-362.8.1.el9_3.x86_64 #1 SMP PREEMPT_DYNAMIC Tue Oct 3 11:12:36 EDT 2023"
    assert node["CfgTRES"] == "cpu=128,mem=515000M,billing=128"
    assert node["Reason"] == "memory test failed [root@2026-11-29T22:15:01]"


def test_multi_gpu_cluster_profile_from_recorded_outputs(tmp_path: Path) -> None:
    text = draft_profile(recorded())
    path = tmp_path / "helios.yaml"
    path.write_text(text)
    profile = load_profile(path)
    cpu, gpu, mpi = (profile.job_kinds[k] for k in ("cpu", "gpu", "mpi"))
    assert profile.name == "helios" and profile.max_array_size == 10001
    assert (cpu.partition, cpu.max_cpus_per_task, cpu.max_time_min, cpu.gres) == ("cpu", 128, 2880, None)
    assert cpu.max_mem_gb == pytest.approx(502.9)  # 515000 MB, rounded down
    # The H100 partition has the most GPUs per node; its MaxCPUsPerNode caps the nodes' 112 CPUs.
    assert (gpu.partition, gpu.gres, gpu.max_gpus_per_node, gpu.max_cpus_per_task, gpu.max_time_min) == (
        "gpu", "gpu:h100", 8, 96, 1440)
    assert mpi.partition == "cpu" and mpi.mpi == "pmi2"
    assert "gpu-mixed 2 node(s) x 64 CPUs, 488 GiB, 4 GPUs (a100/h100), time limit 720 min" in text
    assert "maint" not in text and "reserved" not in text  # down, and not usable by this user (absent from sinfo)
    assert "MaxJobCount: 200000" in text and "accounting_storage/slurmdbd (sacct works)" in text
    todo = [line for line in text.splitlines() if TODO in line]
    assert any("account" in line for line in todo) and any("setup" in line for line in todo)


def test_cluster_without_gpus_or_accounting_is_marked_for_the_operator() -> None:
    text = draft_profile(recorded({"accounting_storage/slurmdbd": "accounting_storage/none",
                                   "gpu:h100:8(S:0-1)": "(null)", "gpu:a100:4(S:0-1),": ""}))
    profile = yaml.safe_load(text)
    assert "gres" not in profile["job_kinds"]["gpu"]
    assert f"gpu:  # {TODO}: no partition has GPU gres" in text
    assert f"# Accounting: none ({TODO})" in text


def test_missing_client_command_is_a_clear_error() -> None:
    with pytest.raises(ProfileError, match="needs the SLURM client commands on PATH"):
        run_command(["scontrol-not-installed", "show", "config"])


@pytest.mark.slurm
def test_detect_on_the_development_cluster(slurm_cluster: dict[str, str], tmp_path: Path) -> None:
    from distillery.executors.slurm import max_array_size

    done = subprocess.run([sys.executable, "-m", "distillery.cli", "profile", "detect"], capture_output=True,
                          text=True, timeout=120, check=True)
    path = tmp_path / "mine.yaml"
    path.write_text(done.stdout)
    profile = load_profile(path)
    assert profile.name == "distillery-dev"
    assert profile.max_array_size == max_array_size()
    assert {kind.partition for kind in profile.job_kinds.values()} == {"main"}  # the default partition, no GPUs
    assert profile.job_kinds["gpu"].gres is None
    assert profile.job_kinds["cpu"].max_cpus_per_task == 8  # DISTILLERY_SLURM_CPUS of start.sh
    assert "urgent" in done.stdout and "(sacct works)" in done.stdout
