"""Answer a question from retrieved documents with the base model, optionally plus a LoRA adapter.

The prompt is built by `ragtune.prompting`, exactly as the adapter was trained.
A reply that is not valid answer JSON never raises: it comes back as a fallback
answer flagged `valid=False`, with the raw text kept for inspection.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ragtune.prompting import build_messages, parse_answer

FALLBACK_PREFIX = "The model's reply could not be read as an answer: "


@dataclass
class Generation:
    answer: str
    citations: list[str]
    valid: bool  # the reply parsed as answer JSON
    raw: str
    tokens: int  # new tokens generated
    seconds: float


def to_answer(raw: str) -> tuple[str, list[str], bool]:
    parsed = parse_answer(raw)
    if parsed is None:
        return FALLBACK_PREFIX + raw.strip()[:500], [], False
    return parsed["answer"], parsed["citations"], True


class Generator:
    """A causal LM (and adapter) loaded once; greedy decoding, so answers are reproducible."""

    def __init__(self, base_model: str, adapter_dir: str | None = None, max_new_tokens: int = 160):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(base_model)
        model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
        if adapter_dir:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter_dir)
        self.model = model.eval()
        self.max_new_tokens = max_new_tokens

    def generate(self, question: str, documents: list[dict]) -> Generation:
        import torch

        inputs = self.tokenizer.apply_chat_template(build_messages(question, documents), add_generation_prompt=True,
                                                    return_tensors="pt", return_dict=True)
        started = time.perf_counter()
        with torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                         pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        seconds = time.perf_counter() - started
        new = output[0][inputs["input_ids"].shape[1]:]
        raw = self.tokenizer.decode(new, skip_special_tokens=True)
        answer, citations, valid = to_answer(raw)
        return Generation(answer=answer, citations=citations, valid=valid, raw=raw, tokens=int(new.shape[0]), seconds=seconds)
