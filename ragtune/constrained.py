"""Constrained decoding: the model can only write answer JSON that parses, cites its prompt's documents and closes.

Each row of a batch gets its own llguidance grammar for exactly the layout `prompting.answer_json`
writes (json.dumps, ensure_ascii=False, default separators):

    {"answer": "<text>", "citations": ["<doc id>", ...]}

- `citations` names only the row's document ids, each at most once, possibly none;
- the reply closes within the budget: the fixed parts and each citation are exact token sequences
  (the canonical tokenization of `{"answer": "`, `", "citations": [`, `"<id>`, `", "<id>`, `"]}`),
  the answer text is bounded in tokens, and EOS is forced once the JSON is complete, so a reply
  generated with the same max_new_tokens ends, EOS included, within it (the split: `Budget`).

Why the answer bound lives in the processor and not in the grammar: llguidance's lexeme option
`[max_tokens=N]` cuts the lexeme wherever its N-th token ends, also after a lone backslash, which
makes the closing quote an escaped one (`...\\", "citations"`: broken JSON; SmolLM2 writes `\\n` as
two tokens). Here the processor counts answer tokens and, `CLOSE_MARGIN` tokens before the limit,
allows only the closing token, or single bytes while an escape or a UTF-8 character is unfinished.

    constraint = AnswerConstraint(tokenizer, max_new_tokens=160)  # once per tokenizer and budget (~0.5 s)
    processor = constraint.processor([[d["doc_id"] for d in docs] for docs in batch_documents])
    output = model.generate(**inputs, max_new_tokens=160, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                            logits_processor=LogitsProcessorList([processor]))  # a fresh processor per call
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import llguidance
import llguidance.hf
import llguidance.torch
import numpy as np
import torch
from transformers import LogitsProcessor

# llguidance's string lexeme for the answer text: any character but `"`, `\` and control characters,
# or one of the escapes json.dumps writes (it writes no `\/`, and `\u00XX` only for rarer controls).
ANSWER_REGEX = r'/([^"\\\x00-\x1f]|\\["\\bfnrt])+/'
# Tokens the processor may need after deciding to close the answer: 3 continuation bytes of an
# unfinished 4-byte UTF-8 character (or one to finish an escape); the closing token is not an answer token.
CLOSE_MARGIN = 3
# Citations may take at most this share of the tokens left after the fixed parts; the answer gets the rest.
CITATION_SHARE = 0.5
MAX_DOCUMENTS = 64  # the grammar remembers which ids were cited in a 64-bit parameter


@dataclass(frozen=True)
class Budget:
    """How one row's `max_new_tokens` is split; fixed + answer + citations <= max_new_tokens.

    fixed: `{"answer": "`, `", "citations": [` and the end-of-turn token.
    answer: the most tokens the answer text may take.
    max_citations: how many ids may be cited; citations: the most tokens they (and `]}`) may take.
    """

    fixed: int
    answer: int
    max_citations: int
    citations: int


def lark_tokens(tokens: list[int]) -> str:
    return " ".join(f"<[{t}]>" for t in tokens)


class AnswerConstraint:
    """What every row shares: the tokenizer as llguidance sees it and the token sequences of the fixed parts."""

    def __init__(self, tokenizer, max_new_tokens: int):
        self.tokenizer_info = llguidance.hf.from_tokenizer(tokenizer)
        self.encode = lambda text: tokenizer.encode(text, add_special_tokens=False)
        self.max_new_tokens = max_new_tokens
        self.eos = tokenizer.eos_token_id
        self.opening = self.encode('{"answer": "')
        self.middle = self.encode('", "citations": [')  # its first token closes the answer string
        self.no_citations = self.encode("]}")
        self.end = self.encode('"]}')
        vocab = self.tokenizer_info.vocab_size
        single = [t for t in range(vocab)
                  if not self.tokenizer_info.is_special_token(t) and len(self.tokenizer_info.decode_bytes([t])) == 1]
        self.single_byte = np.zeros(32 * ((vocab + 31) // 32), dtype=np.bool_)  # as wide as the unpacked bitmask
        self.single_byte[single] = True
        self.executor = llguidance.LLExecutor()

    def budget(self, firsts: list[list[int]], nexts: list[list[int]]) -> Budget:
        fixed = len(self.opening) + len(self.middle) + 1
        room = self.max_new_tokens - fixed

        def cost(k: int) -> int:  # an upper bound: the longest first id, then the longest following ones
            if k == 0:
                return len(self.no_citations)
            return max(map(len, firsts)) + (k - 1) * max(map(len, nexts)) + len(self.end)

        k = len(firsts)
        while k > 0 and cost(k) > CITATION_SHARE * room:
            k -= 1
        budget = Budget(fixed=fixed, answer=room - cost(k), max_citations=k, citations=cost(k))
        if budget.answer <= CLOSE_MARGIN:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} leaves no room for an answer ({budget})")
        return budget

    def grammar(self, doc_ids: list[str]) -> tuple[str, Budget]:
        """The lark grammar of one row's reply, and how its budget is split."""
        ids = list(dict.fromkeys(doc_ids))
        if len(ids) > MAX_DOCUMENTS:
            raise ValueError(f"{len(ids)} documents in one prompt; the citation grammar handles at most {MAX_DOCUMENTS}")
        inner = [json.dumps(i, ensure_ascii=False)[1:-1] for i in ids]
        firsts = [self.encode('"' + s) for s in inner]
        nexts = [self.encode('", "' + s) for s in inner]
        budget = self.budget(firsts, nexts)
        lines = [f"start: {lark_tokens(self.opening)} answer {lark_tokens(self.middle)} citations",
                 f"answer[capture]: ANSWER\nANSWER: {ANSWER_REGEX}"]
        # more::S follows a cited id; bit i of S is set once id i is cited, so no id comes twice
        first = [f"{lark_tokens(t)} more::{1 << i:#x}" for i, t in enumerate(firsts)] if budget.max_citations else []
        lines.append("citations: " + " | ".join([lark_tokens(self.no_citations), *first]))
        more = [f"{lark_tokens(t)} more::set_bit({i}) %if and(bit_clear({i}), bit_count_lt(_, {budget.max_citations}))"
                for i, t in enumerate(nexts)]
        if first:
            lines.append("more::_ : " + " | ".join([lark_tokens(self.end), *more]))
        return "\n".join(lines) + "\n", budget

    def processor(self, doc_ids_per_row: list[list[str]]) -> AnswerProcessor:
        """A fresh logits processor for one `generate()` call; row i may cite only doc_ids_per_row[i]."""
        return AnswerProcessor(self, [self.grammar(ids) for ids in doc_ids_per_row])


class Row:
    """One reply in progress: its matcher, how many tokens it has taken, whether it ended."""

    def __init__(self, constraint: AnswerConstraint, grammar: str, budget: Budget):
        self.matcher = llguidance.LLMatcher(constraint.tokenizer_info, grammar)
        if self.matcher.is_error():
            raise ValueError(f"answer grammar rejected by llguidance: {self.matcher.get_error()}")
        self.budget = budget
        self.opening = len(constraint.opening)
        self.taken = 0
        self.done = False

    def answer_tokens(self) -> int | None:
        """Tokens of answer text so far, or None outside the answer (before it, or once its closing quote is in)."""
        if self.taken < self.opening or self.matcher.get_capture("answer") is not None:
            return None
        return self.taken - self.opening

    def consume(self, token: int, eos: int) -> None:
        if token == eos:  # the grammar allows EOS only once the JSON is complete
            self.done = True  # generate() pads the row from now on
            return
        if not self.matcher.consume_token(token):
            raise RuntimeError(f"token {token} broke the answer grammar: {self.matcher.get_error()}")
        self.taken += 1


class AnswerProcessor(LogitsProcessor):
    """Masks each row's logits to its grammar; one instance per generate() call (it keeps the rows' state)."""

    def __init__(self, constraint: AnswerConstraint, grammars: list[tuple[str, Budget]]):
        self.constraint = constraint
        self.rows = [Row(constraint, grammar, budget) for grammar, budget in grammars]
        self.bitmask = llguidance.torch.allocate_token_bitmask(len(self.rows), constraint.tokenizer_info.vocab_size)
        self.started = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[0] != len(self.rows):
            raise ValueError(f"batch of {input_ids.shape[0]} rows, processor built for {len(self.rows)}")
        if self.started:  # take in the tokens chosen at the previous step
            for row, token in zip(self.rows, input_ids[:, -1].tolist()):
                if not row.done:
                    row.consume(token, self.constraint.eos)
        self.started = True
        live = [(row.matcher, i) for i, row in enumerate(self.rows) if not row.done]
        if live:
            llguidance.torch.fill_next_token_bitmask_par(self.constraint.executor, live, self.bitmask)
        # numpy, on this thread: torch would spread these small ops over its thread pool, slow on a busy CPU
        allowed = np.unpackbits(self.bitmask.numpy().view(np.uint8), axis=1, bitorder="little").view(np.bool_)
        for i, row in enumerate(self.rows):
            if row.done:
                allowed[i] = False
                allowed[i, self.constraint.eos] = True
                continue
            used = row.answer_tokens()
            if used is not None and used >= row.budget.answer - CLOSE_MARGIN:
                # the closing token if it closes here, else one byte towards a finished escape or character
                if row.matcher.validate_tokens(self.constraint.middle) == len(self.constraint.middle):
                    allowed[i] = False
                    allowed[i, self.constraint.middle[0]] = True
                else:
                    allowed[i] &= self.constraint.single_byte
        stuck = np.flatnonzero(~allowed.any(axis=1))
        if stuck.size:
            raise RuntimeError(f"no token can continue row {stuck[0]}: {self.rows[stuck[0]].matcher.get_error()}")
        blocked = np.ones(scores.shape, dtype=np.bool_)  # the model's vocabulary may be padded past the tokenizer's
        width = min(scores.shape[-1], allowed.shape[-1])
        blocked[:, :width] = ~allowed[:, :width]
        return scores.masked_fill_(torch.from_numpy(blocked).to(scores.device), float("-inf"))
