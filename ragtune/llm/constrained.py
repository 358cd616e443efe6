"""Constrained decoding: the model can only write answer JSON that parses, cites its prompt's documents and closes.

Each row of a batch gets its own llguidance grammar for exactly the layout `prompting.answer_json`
writes (json.dumps, ensure_ascii=False, default separators):

    {"answer": "<text>", "citations": ["<doc id>", ...]}

- `citations` names only the row's document ids, each at most once, possibly none;
- the grammar is byte-level: the fixed parts and the ids are string literals, so any tokenization
  of the same bytes is accepted, in particular the one a fine-tuned model was trained on
  (`tokenizer(answer_json(...))`, whose tokens span the parts: `.",` closes the answer and opens
  the separator, ` ["` opens the list and the first id, ` []` writes an empty list);
- the reply closes within the budget, EOS included: the processor keeps, for each row, the fewest
  tokens that complete the JSON from where the row is (`Layout.closing`: the cheapest completion
  with no further citation, tokenized with the fewest tokens), and allows a token only if that
  completion still fits after it. Far from the limit every token the grammar allows fits (a bound,
  `Layout.worst`, says so without looking at tokens); near it, the processor allows only the
  completion's own first tokens and the model's few preferred tokens that still fit, so the
  model's own greedy choice passes whenever it leaves room to close. Bytes the grammar forces (the
  rest of a chosen id, the JSON between the parts) are counted as the tokenizer itself writes them,
  since llguidance allows only that tokenization there; should a count still fall short, the row
  takes the grammar's choice and may run out of budget (then it is flagged), never the batch.
- While the answer is open, the tokens that citations may need (`Budget.citations`) are held back,
  so an answer running into the limit is closed with room to cite (the split: `Budget`).

No escape can break: the answer is one lexeme of JSON string characters and escapes, and a closing
quote right after a backslash belongs to the escape; near the limit an unfinished escape or UTF-8
character is completed before the answer closes (its completion is part of the closing cost).

    constraint = AnswerConstraint(tokenizer, max_new_tokens=160)  # once per tokenizer and budget (~0.6 s)
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
ESCAPED = b'"\\bfnrt'  # the characters that may follow a backslash in the answer
OPENING = b'{"answer": "'
MIDDLE = b'", "citations": ['  # closes the answer string and opens the list
END = b"]}"
SEPARATOR = b', "'  # between a cited id's closing quote and the next id
PLACEHOLDER = b"."  # the answer must not be empty: the cheapest reply closes with this one character
# The answer must have room for more than this many tokens beyond the shortest complete reply.
CLOSE_MARGIN = 3
# Citations may take at most this share of the tokens left after the shortest reply; the answer gets the rest.
CITATION_SHARE = 0.5
MAX_DOCUMENTS = 64  # the grammar remembers which ids were cited in a 64-bit parameter
CANDIDATES = 4  # near the limit: the model's preferred tokens checked one by one (besides the closing's own)
INFINITE = 1 << 30
CANONICAL_CACHE = 1 << 16  # byte strings whose own tokenization is remembered


@dataclass(frozen=True)
class Budget:
    """How one row's `max_new_tokens` is split; fixed + answer + citations == max_new_tokens.

    fixed: the shortest complete reply (a one-character answer, no citation), EOS included.
    answer: about how many more tokens the answer text may take (it is closed once only the
      shortest completion and the citations' share still fit).
    max_citations: how many ids may be cited; citations: the tokens held back for them while the
      answer is open (their canonical tokens, as the trained model writes them).
    """

    fixed: int
    answer: int
    max_citations: int
    citations: int


def lark_string(text: bytes) -> str:
    """A lark string literal matching exactly these bytes (the literal is JSON-quoted, as llguidance reads it)."""
    return json.dumps(text.decode(), ensure_ascii=False)


def utf8_length(lead: int) -> int:
    return 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4


def utf8_completion(partial: bytes) -> bytes:
    """The smallest continuation bytes making `partial` (an unfinished UTF-8 character) one valid character."""
    rest = utf8_length(partial[0]) - len(partial)
    for first in range(0x80, 0xC0):  # only the byte after the lead is restricted (E0, ED, F0, F4)
        tail = bytes([first]) + b"\x80" * (rest - 1)
        try:
            (partial + tail).decode()
            return tail
        except UnicodeDecodeError:
            continue
    raise ValueError(f"{partial!r} cannot start a UTF-8 character")


class Vocabulary:
    """The tokenizer's tokens as bytes; the fewest tokens that write a byte string, and the tokens its
    bytes take once forced (the more of that and the tokenizer's own tokenization)."""

    def __init__(self, tokenizer_info, encode=None):
        self.encode = encode  # text -> the tokenizer's own tokens
        self.canonical_counts: dict[bytes, int] = {}
        self.pieces = [
            b"" if tokenizer_info.is_special_token(t) else tokenizer_info.decode_bytes([t])
            for t in range(tokenizer_info.vocab_size)
        ]
        self.tokens: dict[bytes, list[int]] = {}
        for t, piece in enumerate(self.pieces):
            if piece:
                self.tokens.setdefault(piece, []).append(t)
        self.prefixes = {piece[:n] for piece in self.tokens for n in range(1, len(piece) + 1)}
        missing = [b for b in range(0x80, 0xC0) if bytes([b]) not in self.tokens]
        if missing:  # `Layout.worst` counts one token per byte of an unfinished character
            raise ValueError(f"the tokenizer has no single-byte token for UTF-8 continuation bytes {missing[:4]}...")

    def matches(self, text: bytes, start: int = 0):
        """(end, tokens) for each token whose bytes are text[start:end]."""
        for end in range(start + 1, len(text) + 1):
            piece = text[start:end]
            if piece not in self.prefixes:
                return
            if piece in self.tokens:
                yield end, self.tokens[piece]

    def suffix_costs(self, text: bytes) -> list[int]:
        """costs[i]: the fewest tokens that write text[i:] (INFINITE if none does)."""
        costs = [INFINITE] * len(text) + [0]
        for i in range(len(text) - 1, -1, -1):
            costs[i] = min((1 + costs[end] for end, _ in self.matches(text, i)), default=INFINITE)
        return costs

    def canonical(self, text: bytes) -> int:
        """Tokens in the tokenizer's own tokenization of `text` (0 where it is not whole UTF-8 or unknown)."""
        if self.encode is None:
            return 0
        if text not in self.canonical_counts:
            if len(self.canonical_counts) >= CANONICAL_CACHE:  # a server sees ever new ids: bounded memory
                self.canonical_counts.clear()
            try:
                self.canonical_counts[text] = len(self.encode(text.decode()))
            except UnicodeDecodeError:
                self.canonical_counts[text] = 0
        return self.canonical_counts[text]

    def forced_costs(self, text: bytes) -> list[int]:
        """costs[i]: the tokens that write text[i:] once those bytes are forced: llguidance then allows
        the tokenizer's own tokenization, which may take more tokens than the fewest (`suffix_costs`)."""
        return [max(cost, self.canonical(text[i:])) for i, cost in enumerate(self.suffix_costs(text))]

    def cost(self, text: bytes) -> int:
        return self.forced_costs(text)[0]


class Layout:
    """One row's reply as bytes: where a prefix of it stands, and the fewest tokens that complete it.

    A state is a tuple:
      ("open", k)                  k bytes of OPENING written
      ("answer", nonempty, partial) inside the answer; partial: b"", b"\\\\" or an unfinished UTF-8 character
      ("middle", k)                k bytes of MIDDLE written (the answer is closed)
      ("list",)                    after `[`
      ("id", written, used)        inside a cited id (`written`: its JSON-escaped bytes so far); used: bitmask of ids cited
      ("after", used)              after a cited id's closing quote
      ("separator", k, used)       k bytes of SEPARATOR written
      ("end", k)                   k bytes of END written
      ("done",)                    the JSON is complete: only EOS is left
    """

    START = ("open", 0)

    def __init__(self, vocabulary: Vocabulary, doc_ids: list[str]):
        self.vocabulary = vocabulary
        self.ids = [json.dumps(i, ensure_ascii=False)[1:-1].encode() for i in doc_ids]  # as written between quotes
        self.index = {inner: i for i, inner in enumerate(self.ids)}
        self.by_prefix: dict[bytes, int] = {}  # bytes an id may start with -> bitmask of the ids starting so
        for i, inner in enumerate(self.ids):
            for n in range(len(inner) + 1):
                self.by_prefix[inner[:n]] = self.by_prefix.get(inner[:n], 0) | 1 << i
        # fewest tokens to finish, from each byte of the shortest reply, of the answer's close, and of each id
        self.opening_costs = vocabulary.forced_costs(OPENING + PLACEHOLDER + MIDDLE + END)
        self.middle_costs = vocabulary.forced_costs(MIDDLE + END)
        # after a lone backslash: the escaped character that closes the answer in the fewest tokens
        self.escape_cost, self.escape = min((vocabulary.cost(bytes([c]) + MIDDLE + END), bytes([c])) for c in ESCAPED)
        self.id_costs = [vocabulary.forced_costs(SEPARATOR + inner + b'"' + END) for inner in self.ids]
        unwritable = [doc_ids[i] for i, costs in enumerate(self.id_costs) if costs[0] >= INFINITE]
        if unwritable:
            raise ValueError(f"no sequence of the tokenizer's tokens writes the document id {unwritable[0]!r}")
        # the most the closing cost can be in any state: no token the grammar allows can exceed it
        self.worst = 1 + max(
            max(self.opening_costs),
            max(self.middle_costs),
            self.escape_cost,
            3 + self.middle_costs[0],
            *(max(costs) for costs in self.id_costs),
        )

    @staticmethod
    def in_answer(state: tuple) -> bool:
        return state[0] in ("open", "answer")

    def advance(self, state: tuple, data: bytes) -> tuple:
        for byte in data:
            state = self.step(state, byte)
        return state

    def step(self, state: tuple, byte: int) -> tuple:  # the grammar has checked the byte: no validation here
        kind = state[0]
        if kind == "open":
            return ("answer", False, b"") if state[1] + 1 == len(OPENING) else ("open", state[1] + 1)
        if kind == "answer":
            _, nonempty, partial = state
            if partial == b"\\":
                return ("answer", True, b"")
            if partial:
                partial += bytes([byte])
                return ("answer", True, b"") if len(partial) == utf8_length(partial[0]) else ("answer", nonempty, partial)
            if byte == ord('"'):
                return ("middle", 1)
            if byte == ord("\\") or byte >= 0xC0:
                return ("answer", nonempty, bytes([byte]))
            return ("answer", True, b"")
        if kind == "middle":
            return ("list",) if state[1] + 1 == len(MIDDLE) else ("middle", state[1] + 1)
        if kind == "list":
            return ("end", 1) if byte == ord("]") else ("id", b"", 0)
        if kind == "id":
            _, written, used = state
            if self.by_prefix.get(written + bytes([byte]), 0) & ~used:
                return ("id", written + bytes([byte]), used)
            return ("after", used | 1 << self.index[written])  # the closing quote of a complete id
        if kind == "after":
            return ("end", 1) if byte == ord("]") else ("separator", 1, state[1])
        if kind == "separator":
            _, k, used = state
            return ("id", b"", used) if k + 1 == len(SEPARATOR) else ("separator", k + 1, used)
        if kind == "end":
            return ("done",)
        raise ValueError(f"no byte may follow the complete JSON (state {state})")

    def closing(self, state: tuple) -> tuple[int, bytes]:
        """The fewest tokens, EOS included, that finish the reply from `state` (citing no further id), and those bytes."""
        kind = state[0]
        if kind == "open":
            return 1 + self.opening_costs[state[1]], (OPENING + PLACEHOLDER + MIDDLE + END)[state[1] :]
        if kind == "answer":
            _, nonempty, partial = state
            if partial == b"\\":
                return 1 + self.escape_cost, self.escape + MIDDLE + END
            if partial:
                text = utf8_completion(partial) + MIDDLE + END
                return 1 + self.vocabulary.cost(text), text
            if not nonempty:
                return 1 + self.opening_costs[len(OPENING)], PLACEHOLDER + MIDDLE + END
            return 1 + self.middle_costs[0], MIDDLE + END
        if kind == "middle":
            return 1 + self.middle_costs[state[1]], (MIDDLE + END)[state[1] :]
        if kind in ("list", "after"):
            return 1 + self.middle_costs[len(MIDDLE)], END
        if kind in ("id", "separator"):
            written, used = (state[1], state[2]) if kind == "id" else (b"", state[2])
            start = len(SEPARATOR) + len(written) if kind == "id" else state[1]
            candidates = self.by_prefix.get(written, 0) & ~used
            options = [(self.id_costs[i][start], i) for i in range(len(self.ids)) if candidates >> i & 1]
            if not options:
                return INFINITE, b""
            cost, i = min(options)
            return 1 + cost, (SEPARATOR + self.ids[i] + b'"' + END)[start:]
        if kind == "end":
            return 1 + self.middle_costs[-2], END[state[1] :]
        return 1, b""


class AnswerConstraint:
    """What every row shares: the tokenizer as llguidance sees it, its tokens as bytes, the budget."""

    def __init__(self, tokenizer, max_new_tokens: int):
        self.tokenizer_info = llguidance.hf.from_tokenizer(tokenizer)
        self.encode = lambda text: tokenizer.encode(text, add_special_tokens=False)
        self.max_new_tokens = max_new_tokens
        self.eos = tokenizer.eos_token_id
        self.vocabulary = Vocabulary(self.tokenizer_info, self.encode)
        self.executor = llguidance.LLExecutor()

    def canonical(self, answer: str, ids: list[str]) -> int:
        """Tokens of the reply as the model was trained on it (tokenizer(answer_json(...)))."""
        return len(self.encode(json.dumps({"answer": answer, "citations": ids}, ensure_ascii=False)))

    def budget(self, layout: Layout, ids: list[str]) -> Budget:
        fixed = layout.closing(Layout.START)[0]
        room = self.max_new_tokens - fixed
        # what citations cost as the model writes them: the first id, each further one; plus what
        # the canonical empty closing takes beyond the fewest tokens the processor counts on
        base = self.canonical("x", [])
        slack = max(0, base - self.vocabulary.cost(json.dumps({"answer": "x", "citations": []}).encode()))
        firsts = [self.canonical("x", [i]) - base for i in ids]
        nexts = [self.canonical("x", [i, i]) - self.canonical("x", [i]) for i in ids]

        def cost(k: int) -> int:  # an upper bound: the longest first id, then the longest following ones
            return slack if k == 0 else slack + max(firsts) + (k - 1) * max(nexts)

        k = len(ids)
        while k > 0 and (cost(k) > CITATION_SHARE * room or room - cost(k) <= CLOSE_MARGIN):
            k -= 1
        budget = Budget(fixed=fixed, answer=room - cost(k), max_citations=k, citations=cost(k))
        if budget.answer <= CLOSE_MARGIN:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} leaves no room for an answer ({budget})")
        return budget

    def row(self, doc_ids: list[str]) -> tuple[str, Layout, Budget]:
        """One row's lark grammar, its layout and how its budget is split."""
        ids = list(dict.fromkeys(doc_ids))
        if len(ids) > MAX_DOCUMENTS:
            raise ValueError(f"{len(ids)} documents in one prompt; the citation grammar handles at most {MAX_DOCUMENTS}")
        layout = Layout(self.vocabulary, ids)
        budget = self.budget(layout, ids)
        lines = [f"start: {lark_string(OPENING)} ANSWER {lark_string(MIDDLE)} citations", f"ANSWER: {ANSWER_REGEX}"]
        # more::S follows a cited id; bit i of S is set once id i is cited, so no id comes twice
        quoted = [b'"' + inner + b'"' for inner in layout.ids]
        first = [f"{lark_string(q)} more::{1 << i:#x}" for i, q in enumerate(quoted)] if budget.max_citations else []
        lines.append("citations: " + " | ".join([lark_string(END), *first]))
        more = [
            f"{lark_string(b', ' + q)} more::set_bit({i}) %if and(bit_clear({i}), bit_count_lt(_, {budget.max_citations}))"
            for i, q in enumerate(quoted)
        ]
        if first:
            lines.append("more::_ : " + " | ".join([lark_string(END), *more]))
        return "\n".join(lines) + "\n", layout, budget

    def grammar(self, doc_ids: list[str]) -> tuple[str, Budget]:
        """The lark grammar of one row's reply, and how its budget is split."""
        grammar, _, budget = self.row(doc_ids)
        return grammar, budget

    def processor(self, doc_ids_per_row: list[list[str]]) -> AnswerProcessor:
        """A fresh logits processor for one `generate()` call; row i may cite only doc_ids_per_row[i]."""
        return AnswerProcessor(self, [self.row(ids) for ids in doc_ids_per_row])


class Row:
    """One reply in progress: its matcher, where its bytes stand, how many tokens it has taken, whether it ended."""

    def __init__(self, constraint: AnswerConstraint, grammar: str, layout: Layout, budget: Budget):
        self.matcher = llguidance.LLMatcher(constraint.tokenizer_info, grammar)
        if self.matcher.is_error():
            raise ValueError(f"answer grammar rejected by llguidance: {self.matcher.get_error()}")
        self.layout = layout
        self.budget = budget
        self.limit = constraint.max_new_tokens
        self.state = Layout.START
        self.taken = 0
        self.done = False

    def consume(self, token: int, eos: int, piece: bytes) -> None:
        if token == eos:  # the grammar allows EOS only once the JSON is complete
            self.done = True  # generate() pads the row from now on
            return
        if not self.matcher.consume_token(token):
            raise RuntimeError(f"token {token} broke the answer grammar: {self.matcher.get_error()}")
        self.state = self.layout.advance(self.state, piece)
        self.taken += 1

    def room(self, state: tuple) -> int:
        """Tokens a reply standing at `state` may still take after this step's token, EOS included."""
        held = self.budget.citations if Layout.in_answer(state) else 0  # kept for the citations while the answer is open
        return self.limit - self.taken - 1 - held

    def fits(self, token: int, piece: bytes, eos: int) -> bool:
        """Whether the reply can still close within the budget after this token."""
        if token == eos:
            return self.state == ("done",)
        after = self.layout.advance(self.state, piece)
        return self.layout.closing(after)[0] <= self.room(after)


class AnswerProcessor(LogitsProcessor):
    """Masks each row's logits to its grammar and budget; one instance per generate() call (it keeps the rows' state)."""

    def __init__(self, constraint: AnswerConstraint, rows: list[tuple[str, Layout, Budget]]):
        self.constraint = constraint
        self.rows = [Row(constraint, grammar, layout, budget) for grammar, layout, budget in rows]
        self.bitmask = llguidance.torch.allocate_token_bitmask(len(self.rows), constraint.tokenizer_info.vocab_size)
        self.started = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[0] != len(self.rows):
            raise ValueError(f"batch of {input_ids.shape[0]} rows, processor built for {len(self.rows)}")
        pieces, eos = self.constraint.vocabulary.pieces, self.constraint.eos
        if self.started:  # take in the tokens chosen at the previous step
            for row, token in zip(self.rows, input_ids[:, -1].tolist()):
                if not row.done:
                    row.consume(token, eos, pieces[token])
        self.started = True
        live = [(row.matcher, i) for i, row in enumerate(self.rows) if not row.done]
        if live:
            llguidance.torch.fill_next_token_bitmask_par(self.constraint.executor, live, self.bitmask)
        # numpy, on this thread: torch would spread these small ops over its thread pool, slow on a busy CPU
        allowed = np.unpackbits(self.bitmask.numpy().view(np.uint8), axis=1, bitorder="little").view(np.bool_)
        width = min(scores.shape[-1], allowed.shape[-1])
        for i, row in enumerate(self.rows):
            if row.done or row.state == ("done",):
                allowed[i] = False
                allowed[i, eos] = True
            elif row.layout.worst > row.room(row.state):  # some allowed token might leave too little room: check
                allowed[i] = self.within_budget(row, allowed[i], scores[i, :width])
        stuck = np.flatnonzero(~allowed.any(axis=1))
        if stuck.size:
            raise RuntimeError(f"no token can continue row {stuck[0]}: {self.rows[stuck[0]].matcher.get_error()}")
        blocked = np.ones(scores.shape, dtype=np.bool_)  # the model's vocabulary may be padded past the tokenizer's
        blocked[:, :width] = ~allowed[:, :width]
        return scores.masked_fill_(torch.from_numpy(blocked).to(scores.device), float("-inf"))

    def within_budget(self, row: Row, allowed: np.ndarray, scores: torch.Tensor) -> np.ndarray:
        """Of the allowed tokens, those after which the reply still closes in budget, among the first tokens
        of the cheapest completion and the model's CANDIDATES preferred ones."""
        pieces, eos = self.constraint.vocabulary.pieces, self.constraint.eos
        _, text = row.layout.closing(row.state)
        candidates = {t for _, tokens in self.constraint.vocabulary.matches(text) for t in tokens}
        width = scores.shape[-1]
        ranked = scores.float().cpu().numpy().copy()
        ranked[~allowed[:width]] = -np.inf
        top = np.argpartition(-ranked, CANDIDATES)[:CANDIDATES] if width > CANDIDATES else np.arange(width)
        candidates.update(int(t) for t in top if np.isfinite(ranked[t]))
        kept = np.zeros_like(allowed)
        for t in candidates:
            if t < allowed.shape[0] and allowed[t] and row.fits(t, pieces[t], eos):
                kept[t] = True
        if not kept.any():  # the cost model under-counted (it cannot see every tokenization llguidance forces):
            return allowed  # the grammar's own choice; this row alone may then run out of budget and be flagged
        return kept
