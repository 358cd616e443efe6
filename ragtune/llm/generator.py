"""Answer questions from retrieved documents with the base model, optionally plus a LoRA adapter.

    generator = Generator(base_model, adapter_dir, max_new_tokens=128, dtype="auto", batch_size=8)
    one = generator.generate("Which model tags people?", documents)
    many = generator.generate_batch([(question, documents), ...])

The prompt is built by `ragtune.llm.prompting`, exactly as the adapter was trained.
Decoding is greedy, so answers are reproducible. Three things make it fast on a CPU
without changing what is answered (tests/test_generator.py checks each):
- the adapter is merged into a private copy of the base weights (an unmerged LoRA
  costs about 20% per token); the base checkpoint on disk is never modified;
- bfloat16 where the hardware has bf16 units (`ragtune.precision`);
- prompts go through in left-padded batches, shortest first, so little is padding.
With `constrained=True` every reply is decoded under the answer JSON schema, citing only
the ids of the documents in its own prompt (`ragtune.llm.constrained`). A reply that is still
not answer JSON never raises: it comes back as a fallback answer flagged `valid=False`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ragtune.llm.prompting import build_messages, parse_answer
from ragtune.precision import resolve_dtype

FALLBACK_PREFIX = "The model's reply could not be read as an answer: "
log = logging.getLogger(__name__)


@dataclass
class Generation:
    answer: str
    citations: list[str]
    valid: bool  # the reply parsed as answer JSON
    raw: str
    tokens: int  # new tokens generated
    seconds: float  # this answer's share of its batch's wall time
    unforced: bool | None = None  # constrained: the model's own greedy choice was allowed at every step


def to_answer(raw: str) -> tuple[str, list[str], bool]:
    parsed = parse_answer(raw)
    if parsed is None:
        return FALLBACK_PREFIX + raw.strip()[:500], [], False
    return parsed["answer"], parsed["citations"], True


def load_model(base_model: str, adapter_dir: str | None, dtype: str):
    """The base model with the adapter merged in, in `dtype`; merged in float32 so bf16 rounds once."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    return model.to(getattr(torch, dtype)).eval()


class Generator:
    """A causal LM (and merged adapter) loaded once; greedy decoding in batches."""

    def __init__(
        self,
        base_model: str,
        adapter_dir: str | None = None,
        max_new_tokens: int = 160,
        dtype: str = "auto",
        batch_size: int = 8,
        constrained: bool = True,
    ):
        from transformers import AutoTokenizer

        self.dtype = resolve_dtype(dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(base_model, padding_side="left")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = load_model(base_model, adapter_dir, self.dtype)
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.constraint = None
        if constrained:
            from ragtune.llm.constrained import AnswerConstraint

            self.constraint = AnswerConstraint(self.tokenizer, max_new_tokens)

    def generate(self, question: str, documents: list[dict]) -> Generation:
        return self.generate_batch([(question, documents)])[0]

    def generate_batch(self, requests: list[tuple[str, list[dict]]], progress=None) -> list[Generation]:
        """One Generation per (question, documents), in order; `progress(n)` after each batch of n."""
        prompts = [
            self.tokenizer.apply_chat_template(build_messages(q, docs), add_generation_prompt=True, tokenize=False)
            for q, docs in requests
        ]
        lengths = [len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        order = sorted(range(len(requests)), key=lambda i: lengths[i])  # similar lengths together: little padding
        results: list[Generation | None] = [None] * len(requests)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            doc_ids = [list(dict.fromkeys(d["doc_id"] for d in requests[i][1])) for i in chunk]
            for i, generation in zip(chunk, self._generate([prompts[i] for i in chunk], doc_ids)):
                results[i] = generation
            if progress is not None:
                progress(len(chunk))
        return results

    def _generate(self, prompts: list[str], doc_ids: list[list[str]]) -> list[Generation]:
        import torch
        from transformers import LogitsProcessorList

        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        processors, tracker = LogitsProcessorList(), None
        if self.constraint is not None:
            tracker = InterventionTracker(self.constraint.processor(doc_ids), len(prompts), self.stop_ids)
            processors.append(tracker)
        started = time.perf_counter()
        with torch.inference_mode():
            try:
                output = self.model.generate(
                    **inputs,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    logits_processor=processors,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            except (ValueError, RuntimeError) as exc:  # the constraint gave up: answer freely, replies checked as usual
                if tracker is None:
                    raise
                log.warning("constrained decoding failed (%s); this batch is decoded without it", exc)
                processors, tracker = LogitsProcessorList(), None
                output = self.model.generate(
                    **inputs, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=self.tokenizer.pad_token_id
                )
        seconds = (time.perf_counter() - started) / len(prompts)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        generations = []
        for row, ids in enumerate(new_tokens):
            ids = ids.tolist()
            ends = [n for n, token in enumerate(ids) if token in self.stop_ids]
            ids = ids[: ends[0] + 1] if ends else ids
            raw = self.tokenizer.decode(ids, skip_special_tokens=True)
            answer, citations, valid = to_answer(raw)
            generations.append(
                Generation(
                    answer=answer,
                    citations=citations,
                    valid=valid,
                    raw=raw,
                    tokens=len(ids),
                    seconds=seconds,
                    unforced=None if tracker is None else not tracker.forced[row],
                )
            )
        return generations

    @property
    def stop_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        return ids | {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} - {None}


class InterventionTracker:
    """Wraps the constraint and records, per row, whether it ever overrode the model's own greedy choice.

    A row never overridden is exactly what unconstrained greedy decoding would have produced, so
    the share of unforced replies measures what the adapter itself learned of the contract.
    """

    def __init__(self, inner, rows: int, stop_ids: set[int]):
        self.inner, self.stop_ids = inner, stop_ids
        self.forced = [False] * rows
        self.prompt_length: int | None = None

    def __call__(self, input_ids, scores):
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
        before = scores.argmax(dim=-1)
        scores = self.inner(input_ids, scores)
        after = scores.argmax(dim=-1)
        for row in range(input_ids.shape[0]):
            if before[row] != after[row] and not self._finished(input_ids[row]):
                self.forced[row] = True
        return scores

    def _finished(self, ids) -> bool:
        return any(int(t) in self.stop_ids for t in ids[self.prompt_length :])
