"""`distillery profile detect`: a cluster profile drafted from what the SLURM client commands report.

Reads `scontrol show config` (`Key = value` lines), `scontrol -o show partition` and `scontrol -o show node`
(one `Key=value ...` line per entry) and `sinfo` for the partitions the caller may use. What SLURM cannot say
(the account, the QOS, the venv to activate, the MPI plugin the site supports) is left as a `# TODO(operator)`
comment beside the field; the draft is validated against the profile schema before it is printed.
"""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

import yaml

from distillery.executors.slurm_profile import ClusterProfile, ProfileError

Runner = Callable[[list[str]], str]

COMMANDS = {
    "config": ["scontrol", "show", "config"],
    "partitions": ["scontrol", "--oneliner", "show", "partition"],
    "nodes": ["scontrol", "--oneliner", "show", "node"],
    "usable": ["sinfo", "--noheader", "--format=%R"],
}
TODO = "TODO(operator)"
_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:.]*)=")
_UNLIMITED = {"UNLIMITED", "INFINITE", "NONE", "N/A", "(null)", ""}


def run_command(command: list[str]) -> str:
    """stdout of a SLURM client command; a missing command or a failure is a clear error."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise ProfileError(f"`{command[0]}` not found: `profile detect` needs the SLURM client commands on PATH "
                           "(module load slurm?)") from None
    if done.returncode != 0:
        raise ProfileError(f"`{' '.join(command)}` failed ({done.returncode}): {done.stderr.strip()[:300]}")
    return done.stdout


def parse_config(text: str) -> dict[str, str]:
    """`scontrol show config`: one `Key = value` per line (the value may hold spaces and '=')."""
    config = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            config[key.strip()] = value.strip()
    return config


def parse_oneliner(text: str) -> list[dict[str, str]]:
    """`scontrol -o show partition|node`: one entry per line of `Key=value` pairs; a value may hold spaces
    (`OS=Linux 6.1 #1 SMP`) or '=' after a comma (`CfgTRES=cpu=8,mem=2G`), so a key starts only after blanks."""
    entries = []
    for line in text.splitlines():
        matches = list(_KEY.finditer(line))
        if not matches:
            continue
        entry = {}
        for i, match in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
            entry[match.group(1)] = line[match.end():end].strip()
        entries.append(entry)
    return entries


def parse_minutes(value: str) -> int | None:
    """A SLURM time limit in minutes: `UNLIMITED`, `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`."""
    value = value.strip()
    if value.upper() in _UNLIMITED:
        return None
    days, _, rest = value.rpartition("-") if "-" in value else ("0", "", value)
    parts = [int(p) for p in rest.split(":")]
    if "-" in value:
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    else:
        hours, (minutes, seconds) = 0, (parts + [0])[:2]
    return int(days) * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def parse_gpus(gres: str) -> tuple[str | None, int]:
    """The GPU type and count of a node's `Gres=`: `gpu:h100:8(S:0-1),nvme:1` -> ('h100', 8); `gpu:4` -> (None, 4)."""
    for item in re.split(r",(?![^()]*\))", gres):
        fields = re.sub(r"\(.*\)$", "", item.strip()).split(":")
        if fields[0] != "gpu" or len(fields) < 2:
            continue
        count = fields[-1]
        kind = fields[1] if len(fields) == 3 else None
        return kind, int(count) if count.isdigit() else 0
    return None, 0


def _number(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


@dataclass
class Partition:
    """One partition as the profile needs it: its nodes' smallest shape (what a task can count on anywhere)."""

    name: str
    default: bool
    max_time_min: int | None
    cpus: int | None = None
    mem_mb: int | None = None
    gpus: int = 0
    gpu_types: set[str] = field(default_factory=set)
    nodes: int = 0


def partitions(partition_text: str, node_text: str, usable: set[str] | None = None) -> list[Partition]:
    """Each usable, up partition with the smallest CPUs, memory and GPUs of its nodes (capped by its own limits)."""
    nodes = [entry for entry in parse_oneliner(node_text) if "NodeName" in entry]
    result = []
    for entry in parse_oneliner(partition_text):
        name = entry.get("PartitionName", "")
        if not name or entry.get("State", "UP") != "UP" or (usable is not None and name not in usable):
            continue
        part = Partition(name, entry.get("Default") == "YES", parse_minutes(entry.get("MaxTime", "UNLIMITED")))
        members = [n for n in nodes if name in n.get("Partitions", "").split(",")]
        part.nodes = len(members)
        if members:
            cpus = [_number(n.get("CPUEfctv") or n.get("CPUTot")) for n in members]
            mems = [_number(n.get("RealMemory")) for n in members]
            gpus = [parse_gpus(n.get("Gres", "")) for n in members]
            part.cpus = min((c for c in cpus if c), default=None)
            part.mem_mb = min((m for m in mems if m), default=None)
            part.gpus = min(count for _, count in gpus)
            part.gpu_types = {kind for kind, count in gpus if kind and count}
        for limit, attribute in (("MaxCPUsPerNode", "cpus"), ("MaxMemPerNode", "mem_mb")):
            cap = _number(entry.get(limit))
            if cap is not None and (getattr(part, attribute) is None or cap < getattr(part, attribute)):
                setattr(part, attribute, cap)
        result.append(part)
    return result


def _choose(parts: list[Partition], gpu: bool) -> Partition | None:
    """The partition for a job kind: GPU partitions by most GPUs per node, CPU ones default first, then size."""
    if gpu:
        candidates = [p for p in parts if p.gpus]
        return max(candidates, key=lambda p: (p.gpus, p.nodes), default=None)
    candidates = [p for p in parts if not p.gpus] or parts
    return max(candidates, key=lambda p: (p.default, p.nodes, p.cpus or 0), default=None)


def _kind_lines(kind: str, part: Partition | None, note: str) -> list[str]:
    lines = [f"  {kind}:{note}"]
    if part is None:
        return lines + [f"    partition: null           # {TODO}: no partition found for this kind"]
    lines.append(f"    partition: {part.name}")
    lines.append(f"    # account: <account>       # {TODO}: sacctmgr show assoc user=$USER format=account")
    lines.append(f"    # qos: <qos>               # {TODO}: sacctmgr show assoc user=$USER format=qos")
    if kind == "gpu" and part.gpus:
        types = sorted(part.gpu_types)
        gres = f"gpu:{types[0]}" if len(types) == 1 else "gpu"
        mixed = f"  # nodes mix {', '.join(types)}: add a constraint to pick one" if len(types) > 1 else ""
        lines.append(f"    gres: {gres}{mixed}")
        lines.append(f"    max_gpus_per_node: {part.gpus}")
    if kind == "mpi":
        lines.append(f"    mpi: pmi2                   # {TODO}: a plugin `srun --mpi=list` shows (pmi2 with mpich)")
    if part.cpus:
        lines.append(f"    max_cpus_per_task: {part.cpus}")
    if part.mem_mb:
        lines.append(f"    max_mem_gb: {math.floor(part.mem_mb / 102.4) / 10}")  # rounded down: a task must fit
    if part.max_time_min:
        lines.append(f"    max_time_min: {part.max_time_min}")
    lines.append(f"    setup: []                   # {TODO}: e.g. [module load cuda, source ~/venvs/x/bin/activate]")
    return lines


def draft_profile(run: Runner = run_command) -> str:
    """The profile YAML, with comments for what the operator must fill in or check; validated before return."""
    config = parse_config(run(COMMANDS["config"]))
    usable = {line.strip().rstrip("*") for line in run(COMMANDS["usable"]).splitlines() if line.strip()}
    parts = partitions(run(COMMANDS["partitions"]), run(COMMANDS["nodes"]), usable or None)
    if not parts:
        raise ProfileError("`scontrol show partition` lists no partition that is up and usable by this user")
    name = config.get("ClusterName") or "cluster"
    accounting = config.get("AccountingStorageType", "accounting_storage/none")
    array = _number(config.get("MaxArraySize"))
    jobs = _number(config.get("MaxJobCount"))
    cpu, gpu = _choose(parts, gpu=False), _choose(parts, gpu=True)
    lines = [
        f"# Drafted by `distillery profile detect` from the SLURM client commands of cluster {name!r}.",
        f"# Lines marked {TODO} are what SLURM could not tell: fill them in, then point a recipe at this file",
        "# (executor: {kind: slurm, profile: slurm/profiles/<this>.yaml}).",
        "# Partitions you may use (* default), each with the shape of its smallest node:",
        *(f"#   {p.name}{'*' if p.default else ''} {p.nodes} node(s) x {p.cpus} CPUs, {(p.mem_mb or 0) / 1024:.0f} GiB"
          + (f", {p.gpus} GPUs ({'/'.join(sorted(p.gpu_types)) or 'untyped'})" if p.gpus else "")
          + f", time limit {p.max_time_min or 'none'}{' min' if p.max_time_min else ''}" for p in parts),
        f"# MaxJobCount: {jobs or 'unknown'} (jobs the controller holds at once; an array task counts once it starts)",
    ]
    if accounting.endswith("/none"):
        lines.append(f"# Accounting: none ({TODO}): sacct does not work here, so a killed job cannot be told from a "
                     "running one; ask for slurmdbd or run steps locally")
    else:
        lines.append(f"# Accounting: {accounting} (sacct works)")
    lines += [f"name: {name}",
              "signal_delay_s: 90            # USR2 this long before the time limit: checkpoint, then requeue",
              "max_timeouts: 3               # requeues at the time limit per task (preemptions do not count)"]
    if array:
        lines.append(f"max_array_size: {array}          # MaxArraySize")
    lines.append("job_kinds:")
    gpu_note = "" if gpu else f"  # {TODO}: no partition has GPU gres; a step asking for GPUs fails before submission"
    lines += _kind_lines("cpu", cpu, "")
    lines += _kind_lines("gpu", gpu or cpu, gpu_note)
    lines += _kind_lines("mpi", cpu, "")
    text = "\n".join(lines) + "\n"
    try:
        ClusterProfile.model_validate(yaml.safe_load(text))
    except ValueError as error:  # a bug here, not the operator's: say what was drafted
        raise ProfileError(f"drafted profile does not validate ({error}):\n{text}") from None
    return text
