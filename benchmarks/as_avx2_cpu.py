"""Run a command as if this machine's CPU had AVX2 but no AVX-512 and no native bf16 (a common laptop or cloud CPU).

    python benchmarks/as_avx2_cpu.py ./launch.sh quickstart

An emulation, for hosts that have AVX-512: every library that picks kernels is held to AVX2 (PyTorch's dispatch
`ATEN_CPU_CAPABILITY`, oneDNN `ONEDNN_MAX_CPU_ISA`, MKL `MKL_ENABLE_INSTRUCTIONS`), vLLM loads its `_C_AVX2` kernels
(`avx2_only/sitecustomize.py` hides AVX-512 from torch's CPUID checks), and `DISTILLERY_DTYPE=float32` is what
distillery's dtype rule chooses on such a CPU. What it cannot hide: the core's clock, caches and memory bandwidth,
so a real AVX2-only CPU may be faster or slower. The command's first line says what the CPU reports and what the
libraries were held to.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HOOK = Path(__file__).resolve().parent / "avx2_only"
HELD = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "DISTILLERY_DTYPE": "float32"}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    flags = sorted({flag for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
                    for flag in line.split(":", 1)[1].split() if flag.startswith(("avx512", "amx"))})
    print(f"as an AVX2-only CPU: this CPU has {' '.join(flags) or 'no AVX-512'}; held to AVX2 with "
          f"{' '.join(f'{k}={v}' for k, v in HELD.items())}", flush=True)
    env = {**os.environ, **HELD, "PYTHONPATH": os.pathsep.join(filter(None, [str(HOOK), os.environ.get("PYTHONPATH")]))}
    os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
