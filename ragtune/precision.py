"""One precision for generation, embedding and training: `RAGTUNE_DTYPE` = auto | float32 | bfloat16.

    resolve_dtype("auto")   # "bfloat16" on a CPU with bf16 matrix units (AMX, AVX512-BF16) or a bf16 GPU
    torch_dtype("bfloat16") # torch.bfloat16

`auto` picks bfloat16 only where the hardware computes it natively: there a 135M model
processes prompts about 3x faster and a LoRA step about 1.5x faster (README, bench/generate.py).
On older CPUs bfloat16 is emulated and slower than float32, so `auto` stays with float32.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

DTYPES = ("auto", "float32", "bfloat16")
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (empty elsewhere)."""
    info = Path("/proc/cpuinfo")
    if not info.is_file():
        return frozenset()
    for line in info.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def bf16_native() -> bool:
    """True when bfloat16 matrix products run in hardware here (a bf16 GPU, or CPU bf16 units)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return any(flag in cpu_flags() for flag in CPU_BF16_FLAGS)


def resolve_dtype(setting: str = "auto") -> str:
    """`float32` or `bfloat16` for a setting of DTYPES."""
    if setting not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {setting!r}")
    if setting == "auto":
        return "bfloat16" if bf16_native() else "float32"
    return setting


def torch_dtype(setting: str = "auto"):
    import torch

    return getattr(torch, resolve_dtype(setting))
