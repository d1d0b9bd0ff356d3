"""The dtype a model runs in follows the machine: bf16 only on GPUs and on CPUs that compute it natively."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillery import hardware

AVX2_ONLY = frozenset({"fpu", "sse4_2", "avx", "avx2", "fma"})
AVX512_BF16 = AVX2_ONLY | {"avx512f", "avx512_bf16"}
SAPPHIRE_RAPIDS = AVX512_BF16 | {"amx_tile", "amx_bf16"}


@pytest.fixture(autouse=True)
def fresh_choices():
    hardware.forget_choices()
    yield
    hardware.forget_choices()


def test_a_cpu_without_native_bf16_runs_float32() -> None:
    choice = hardware.choose_dtype("vllm teacher", "cpu", flags=AVX2_ONLY)
    assert choice.dtype == "float32" and "emulated" in choice.reason


@pytest.mark.parametrize("flags, named", [(AVX512_BF16, "avx512_bf16"), (SAPPHIRE_RAPIDS, "amx_bf16")])
def test_a_cpu_with_native_bf16_runs_bf16_and_says_which_instructions(flags, named) -> None:
    choice = hardware.choose_dtype("perplexity reference", "cpu", flags=flags)
    assert choice.dtype == "bfloat16" and named in choice.reason


def test_gpus_keep_bf16_and_the_recipe_wins() -> None:
    assert hardware.choose_dtype("sft", "cuda:1", flags=AVX2_ONLY).dtype == "bfloat16"
    named = hardware.choose_dtype("embeddings", "cpu", "bfloat16", flags=AVX2_ONLY)
    assert (named.dtype, named.reason) == ("bfloat16", "set in the recipe")
    with pytest.raises(ValueError, match="dtype must be one of"):
        hardware.choose_dtype("embeddings", "cpu", "bf16", flags=AVX2_ONLY)


def test_choices_are_recorded_for_the_manifest_and_logged_once(caplog) -> None:
    caplog.set_level("INFO", logger="distillery.hardware")
    for _ in range(3):
        hardware.choose_dtype("vllm smol-warm", "cpu", flags=AVX2_ONLY)
    hardware.choose_dtype("sft", "cpu", "float32", flags=AVX2_ONLY)
    assert len([r for r in caplog.records if "smol-warm" in r.getMessage()]) == 1
    assert hardware.dtype_stats() == {
        "vllm smol-warm": {"device": "cpu", "dtype": "float32", "reason": hardware.choose_dtype(
            "vllm smol-warm", "cpu", flags=AVX2_ONLY).reason},
        "sft": {"device": "cpu", "dtype": "float32", "reason": "set in the recipe"}}
    hardware.forget_choices()
    assert hardware.dtype_stats() == {}


def test_flags_come_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\n"
                       "processor\t: 1\nflags\t\t: fpu\n")
    assert hardware.cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512f", "avx512_bf16"}
    assert hardware.cpu_name(cpuinfo) == "AMD EPYC 7B13"
    assert hardware.native_bf16_flags(hardware.cpu_flags(cpuinfo)) == ["avx512_bf16"]


def test_a_component_that_cannot_use_bf16_on_cpus_says_why() -> None:
    choice = hardware.choose_dtype("sft", "cpu", flags=SAPPHIRE_RAPIDS, no_cpu_bf16="autocast unsupported")
    assert (choice.dtype, choice.reason) == ("float32", "autocast unsupported")
    assert hardware.choose_dtype("sft", "cuda", flags=AVX2_ONLY, no_cpu_bf16="autocast unsupported").dtype == "bfloat16"


def test_the_environment_pins_every_automatic_choice_but_not_the_recipe(monkeypatch) -> None:
    monkeypatch.setenv(hardware.FORCE_ENV, "float32")
    assert hardware.choose_dtype("vllm teacher", "cuda", flags=SAPPHIRE_RAPIDS).reason == hardware.FORCE_ENV
    assert hardware.choose_dtype("vllm teacher", "cpu", flags=SAPPHIRE_RAPIDS).dtype == "float32"
    assert hardware.choose_dtype("embeddings", "cpu", "bfloat16", flags=AVX2_ONLY).dtype == "bfloat16"
    monkeypatch.setenv(hardware.FORCE_ENV, "fp8")
    with pytest.raises(ValueError, match=hardware.FORCE_ENV):
        hardware.choose_dtype("sft", "cpu", flags=AVX2_ONLY)
