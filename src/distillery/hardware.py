"""What this machine computes with: the device a model runs on and the dtype it runs in.

A CPU without native bf16 instructions (AVX512-BF16 or AMX) emulates bf16 arithmetic: on a 2-core AVX2 EPYC, vLLM
decoded SmolLM2 at 52 tokens/s in bf16 and 197 in float32. So every model that runs on a CPU uses bf16 only where
the CPU has it natively, else float32; GPUs keep bf16; a dtype named in the recipe always wins. Each choice is
logged once per process and component, and the runner copies the choices of a task into its manifest's stats.
`DISTILLERY_DTYPE` pins every automatic choice (a run resumed on another kind of host then computes as before).
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

AUTO = "auto"
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""/proc/cpuinfo flags of x86 CPUs that compute bf16 natively."""
DTYPES = ("float32", "bfloat16", "float16")
FORCE_ENV = "DISTILLERY_DTYPE"
"""Set it (float32, bfloat16) to pin every `auto` dtype, e.g. to reproduce on one host what another host chose."""


@dataclass(frozen=True)
class DtypeChoice:
    component: str
    """What loads the model: teacher engine, perplexity reference, embeddings, sft, ..."""
    device: str
    dtype: str
    reason: str


_choices: dict[str, DtypeChoice] = {}


@functools.cache
def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The instruction-set flags of this machine's first CPU (empty where /proc/cpuinfo has none)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name, for naming the machine beside a timing."""
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def native_bf16_flags(flags: frozenset[str] | None = None) -> list[str]:
    """The native-bf16 flags this CPU has (none on AVX2-only CPUs)."""
    present = cpu_flags() if flags is None else flags
    return [flag for flag in NATIVE_BF16_FLAGS if flag in present]


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_device(device: str = AUTO) -> str:
    """`auto` is cuda where a GPU is visible, else cpu; anything else is kept (cpu, cuda, cuda:1, ...)."""
    if device == AUTO:
        return "cuda" if cuda_available() else "cpu"
    return device


def choose_dtype(component: str, device: str, requested: str | None = AUTO,
                 flags: frozenset[str] | None = None, no_cpu_bf16: str | None = None) -> DtypeChoice:
    """The dtype `component` runs in on `device`, in this order: the recipe's; float32 on a CPU where the component
    cannot use bf16 (`no_cpu_bf16` says why); `DISTILLERY_DTYPE`; bf16 on GPUs and on CPUs with native bf16; else
    float32. Recorded for the task's manifest and logged once per component."""
    on_cpu = not device.startswith("cuda")
    forced = os.environ.get(FORCE_ENV)
    if requested not in (None, AUTO):
        choice = DtypeChoice(component, device, _known(requested, component, "the recipe"), "set in the recipe")
    elif on_cpu and no_cpu_bf16:
        choice = DtypeChoice(component, device, "float32", no_cpu_bf16)
    elif forced:
        choice = DtypeChoice(component, device, _known(forced, component, FORCE_ENV), FORCE_ENV)
    elif not on_cpu:
        choice = DtypeChoice(component, device, "bfloat16", "GPU")
    elif native := native_bf16_flags(flags):
        choice = DtypeChoice(component, device, "bfloat16", f"CPU has native bf16 ({', '.join(native)})")
    else:
        choice = DtypeChoice(component, device, "float32",
                             "CPU has no native bf16 (no avx512_bf16/amx_bf16): bf16 would be emulated")
    if _choices.get(component) != choice:
        logger.info("%s runs in %s on %s: %s", component, choice.dtype, choice.device, choice.reason)
    _choices[component] = choice
    return choice


def _known(dtype: str, component: str, source: str) -> str:
    if dtype not in DTYPES:
        raise ValueError(f"{component}: dtype must be one of {', '.join((AUTO, *DTYPES))}, got {dtype!r} ({source})")
    return dtype


def dtype_stats() -> dict[str, dict[str, str]]:
    """The choices made in this process since `forget_choices`, for a manifest's stats."""
    return {component: {k: v for k, v in asdict(choice).items() if k != "component"}
            for component, choice in _choices.items()}


def forget_choices() -> None:
    """Start a task's record afresh (several local tasks may run in one process)."""
    _choices.clear()
