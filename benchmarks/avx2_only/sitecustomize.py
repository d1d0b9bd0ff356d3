"""Loaded by every Python process under `benchmarks/as_avx2_cpu.py`: hides AVX-512 and bf16 from the checks that
read the CPU itself (CPUID, not an environment variable), so vLLM loads its AVX2 kernels as it would on such a CPU.

torch is not imported here (that would slow every process): the patch is applied right after torch's own import.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType


def _hide_avx512(torch: ModuleType) -> None:
    torch.cpu._is_avx512_supported = lambda: False
    torch.cpu._is_avx512_bf16_supported = lambda: False
    torch.cpu._is_amx_tile_supported = lambda: False


class _AfterTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if name != "torch":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            original(module)
            _hide_avx512(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


sys.meta_path.insert(0, _AfterTorch())
