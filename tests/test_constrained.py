"""Constrained decoding of the answer JSON: with the real base model, and driven token by token towards chosen replies."""

import functools
import json

import numpy as np
import pytest
import torch

from ragtune.llm.constrained import AnswerConstraint
from ragtune.llm.generator import InterventionTracker
from ragtune.llm.prompting import NOT_COVERED, answer_json, build_messages, parse_answer

TRICKY_IDS = ['say "hi"\\now', "docs/a b.md", "superb/wav2vec2-base-superb-ks", "ünï/cödé 😀"]


@pytest.fixture(scope="module")
def constraint(tokenizer):
    """AnswerConstraint(tokenizer, max_new_tokens), built once per budget (each takes about half a second)."""
    return functools.cache(lambda max_new_tokens: AnswerConstraint(tokenizer, max_new_tokens))


@pytest.fixture(scope="module")
def model(base_model):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32).eval()


def generate(model, tokenizer, constraint: AnswerConstraint, rows: list[tuple[str, list[dict]]]) -> list[str]:
    """Greedy replies of one left-padded batch under the constraint, with its budget as max_new_tokens."""
    from transformers import LogitsProcessorList

    texts = [
        tokenizer.apply_chat_template(build_messages(q, docs), tokenize=False, add_generation_prompt=True) for q, docs in rows
    ]
    inputs = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    processor = constraint.processor([[d["doc_id"] for d in docs] for _, docs in rows])
    with torch.inference_mode():
        out = model.generate(
            **inputs,
            max_new_tokens=constraint.max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            logits_processor=LogitsProcessorList([processor]),
        )
    return tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def document(doc_id: str, text: str) -> dict:
    return {"doc_id": doc_id, "title": doc_id, "text": text}


def assert_contract(reply: str, doc_ids: list[str]) -> dict:
    parsed = parse_answer(reply)
    assert parsed is not None, reply
    assert set(parsed["citations"]) <= set(doc_ids), reply
    assert len(set(parsed["citations"])) == len(parsed["citations"]), reply
    assert answer_json(parsed["answer"], parsed["citations"]) == reply, "not the json.dumps layout"
    return parsed


def test_every_row_answers_in_contract_citing_only_its_own_documents(model, tokenizer, constraint):
    rows = [
        (
            "Which model spots keywords in speech?",
            [
                document(
                    "superb/wav2vec2-base-superb-ks",
                    "Keyword spotting on SUPERB: pipeline('audio-classification', model='superb/wav2vec2-base-superb-ks').",
                ),
                document("docs/a b.md", "Cooking pasta."),
            ],
        ),
        (
            "How do I summarize news articles?",
            [
                document(
                    "facebook/bart-large-cnn", "Summarize news with pipeline('summarization', model='facebook/bart-large-cnn')."
                )
            ],
        ),
        (
            "How do I greet someone?",
            [document('say "hi"\\now', "To greet someone, say hi."), document("t5-small", "Translate text.")],
        ),
    ]
    replies = generate(model, tokenizer, constraint(64), rows)
    for reply, (_, docs) in zip(replies, rows):
        assert_contract(reply, [d["doc_id"] for d in docs])


def test_a_tiny_budget_still_closes_the_json(model, tokenizer, constraint):
    rows = [
        (
            "Explain in detail how to fine-tune a speech model, step by step.",
            [document("superb/wav2vec2-base-superb-ks", "Keyword spotting. " * 20)],
        )
    ]
    (reply,) = generate(model, tokenizer, constraint(24), rows)
    assert_contract(reply, ["superb/wav2vec2-base-superb-ks"])


class Steer:
    """Drives a processor as greedy generate() does, with logits that prefer the longest token continuing `target`.

    Where the grammar refuses the target (a repeated or foreign id, a reply over budget), the processor's
    mask decides and the reply departs from the target. Rows that ended are padded with EOS, as generate() does.
    """

    def __init__(self, constraint: AnswerConstraint, eos: int, longest: bool = True):
        info = constraint.tokenizer_info
        self.longest = longest  # else the shortest: a reply in as many tokens as its bytes allow
        self.pieces = [b"" if info.is_special_token(t) else info.decode_bytes([t]) for t in range(info.vocab_size)]
        self.by_first_byte = {}
        for t, piece in enumerate(self.pieces):
            if piece:
                self.by_first_byte.setdefault(piece[0], []).append(t)
        self.eos = eos

    def scores(self, target: bytes, made: bytes) -> np.ndarray:
        scores = np.full(len(self.pieces), -1.0, dtype=np.float32)
        if target == made:
            scores[self.eos] = 1.0
        elif target.startswith(made):
            remaining = target[len(made) :]
            for t in self.by_first_byte.get(remaining[0], []):
                if remaining.startswith(self.pieces[t]):
                    scores[t] = len(self.pieces[t]) if self.longest else 100 - len(self.pieces[t])
        return scores

    def run(self, processor, targets: list[str], max_new_tokens: int) -> list[list[int]]:
        made = [[] for _ in targets]
        ended = [False] * len(targets)
        input_ids = torch.zeros((len(targets), 3), dtype=torch.long)  # the prompt plays no part
        for _ in range(max_new_tokens):
            scores = np.stack([self.scores(t.encode(), b"".join(self.pieces[x] for x in m)) for t, m in zip(targets, made)])
            chosen = processor(input_ids, torch.from_numpy(scores)).argmax(dim=-1).tolist()
            for i, token in enumerate(chosen):
                if ended[i]:
                    chosen[i] = self.eos
                else:
                    made[i].append(token)
                    ended[i] = token == self.eos
            input_ids = torch.cat([input_ids, torch.tensor(chosen)[:, None]], dim=1)
            if all(ended):
                break
        return made


@pytest.fixture(scope="module")
def steer(tokenizer, constraint):
    return Steer(constraint(160), tokenizer.eos_token_id)


def reply_text(tokenizer, tokens: list[int]) -> str:
    assert tokens and tokens[-1] == tokenizer.eos_token_id, "the reply did not end with EOS"
    return tokenizer.decode(tokens, skip_special_tokens=True)


def test_ids_with_quotes_spaces_slashes_and_unicode_are_escaped(tokenizer, constraint, steer):
    target = answer_json('He said "use it"\\\ttoday.', TRICKY_IDS[::-1])
    processor = constraint(160).processor([TRICKY_IDS])
    (tokens,) = steer.run(processor, [target], 160)
    assert reply_text(tokenizer, tokens) == target
    assert json.loads(target)["citations"] == TRICKY_IDS[::-1]


@pytest.mark.parametrize("citations", [["docs/a b.md", "docs/a b.md"], ["docs/a b.md", "not/in-this-prompt"], ["docs/a"]])
def test_repeated_or_foreign_ids_cannot_be_written(tokenizer, constraint, steer, citations):
    target = answer_json("Use it.", citations)
    processor = constraint(160).processor([TRICKY_IDS])
    (tokens,) = steer.run(processor, [target], 160)
    reply = reply_text(tokenizer, tokens)
    assert reply != target
    assert_contract(reply, TRICKY_IDS)


@pytest.mark.parametrize("answer", ["word " * 200, "line\n" * 200, "😀 é" * 150, 'a"😀\\' * 100])
@pytest.mark.parametrize("max_new_tokens", [16, 40])
def test_an_answer_longer_than_the_budget_is_cut_and_closed_in_budget(tokenizer, constraint, steer, answer, max_new_tokens):
    processor = constraint(max_new_tokens).processor([TRICKY_IDS[:2]])
    (tokens,) = steer.run(processor, [answer_json(answer, TRICKY_IDS[:2])], max_new_tokens)
    parsed = assert_contract(reply_text(tokenizer, tokens), TRICKY_IDS[:2])  # EOS came within max_new_tokens steps
    assert answer.startswith(parsed["answer"]) and parsed["answer"]


def test_a_row_that_finishes_early_leaves_the_others_alone(tokenizer, constraint, steer):
    ids = [["a"], ["docs/a b.md", "superb/wav2vec2-base-superb-ks"], []]
    targets = [
        answer_json("No.", []),
        answer_json("A longer answer, " * 4, ids[1][::-1]),
        answer_json("Somewhat longer than the first.", []),
    ]
    processor = constraint(160).processor(ids)
    made = steer.run(processor, targets, 160)
    assert [reply_text(tokenizer, m) for m in made] == targets
    assert len(made[0]) < len(made[2]) < len(made[1])  # rows ended at different steps, padded after


def test_a_budget_too_small_for_any_answer_is_refused(tokenizer):
    with pytest.raises(ValueError, match="no room for an answer"):
        AnswerConstraint(tokenizer, 12).processor([["a"]])


CANONICAL = [
    ("Use pipeline('x', model='org/m').", ["org/m"], ["org/m", "docs/a b.md"]),
    (NOT_COVERED, [], ["org/m", "docs/a b.md"]),
    ("Two.", ["docs/a b.md", "org/m"], ["org/m", "docs/a b.md"]),
    (NOT_COVERED, [], []),
]


def canonical_tokens(tokenizer, answer: str, citations: list[str]) -> list[int]:
    """The reply as training tokenized it: the whole answer JSON at once, then the end-of-turn token."""
    return tokenizer(answer_json(answer, citations), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def test_the_canonical_tokenization_crosses_the_json_parts(tokenizer):
    """Why the grammar is byte-level: the trained tokens span the boundaries between the fixed parts."""
    pieces = lambda answer, citations: [tokenizer.decode([t]) for t in canonical_tokens(tokenizer, answer, citations)]  # noqa: E731
    assert ' ["' in pieces(*CANONICAL[0][:2])
    assert '.",' in pieces(*CANONICAL[1][:2]) and " []" in pieces(*CANONICAL[1][:2])


def feed_canonical(tokenizer, processor, replies: list[list[int]], rows: int) -> InterventionTracker:
    """Drives the processor, wrapped as the generator wraps it, with logits whose maximum is each row's
    next canonical token (random below it), padding rows that ended; returns the tracker."""
    eos = tokenizer.eos_token_id
    tracker = InterventionTracker(processor, rows, {eos})
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.zeros((rows, 3), dtype=torch.long)
    for step in range(max(map(len, replies))):
        scores = torch.rand((rows, len(tokenizer)), generator=generator)
        wanted = [reply[step] if step < len(reply) else eos for reply in replies]
        scores[torch.arange(rows), wanted] = 2.0
        masked = tracker(input_ids, scores.clone())
        for row, token in enumerate(wanted):
            if step < len(replies[row]):
                assert masked[row, token] == 2.0, (
                    f"row {row}: {tokenizer.decode([token])!r} masked after {tokenizer.decode(replies[row][:step])!r}"
                )
        input_ids = torch.cat([input_ids, torch.tensor(wanted)[:, None]], dim=1)
    return tracker


def test_canonical_replies_pass_unforced(tokenizer, constraint):
    """A reply tokenized as in training is never overridden: the generator's unforced diagnostic sees what the model learned."""
    replies = [canonical_tokens(tokenizer, answer, citations) for answer, citations, _ in CANONICAL]
    tracker = feed_canonical(tokenizer, constraint(160).processor([ids for _, _, ids in CANONICAL]), replies, len(CANONICAL))
    assert tracker.forced == [False] * len(CANONICAL)


def test_a_canonical_reply_fits_a_budget_of_its_own_length(tokenizer, constraint):
    answer, citations, ids = CANONICAL[3]
    reply = canonical_tokens(tokenizer, answer, citations)
    tracker = feed_canonical(tokenizer, constraint(len(reply)).processor([ids]), [reply], 1)
    assert tracker.forced == [False]


@pytest.mark.parametrize("max_new_tokens", [16, 40])
def test_a_reply_in_the_most_tokens_its_bytes_allow_still_closes_in_budget(tokenizer, constraint, max_new_tokens):
    """Tokens of one or two bytes where the model could write longer ones: the budget counts real tokens."""
    steer = Steer(constraint(max_new_tokens), tokenizer.eos_token_id, longest=False)
    ids = TRICKY_IDS[:2]
    processor = constraint(max_new_tokens).processor([ids, TRICKY_IDS])
    made = steer.run(processor, [answer_json("Yes, é😀.", ids[::-1]), answer_json("No.", [TRICKY_IDS[3]])], max_new_tokens)
    for tokens, row_ids in zip(made, [ids, TRICKY_IDS]):
        assert len(tokens) <= max_new_tokens
        assert_contract(reply_text(tokenizer, tokens), row_ids)


@pytest.mark.parametrize("seed", range(4))
def test_any_choice_the_mask_leaves_keeps_the_contract(tokenizer, constraint, seed):
    """Random logits: whatever the model prefers among the allowed tokens, the reply is in contract and closes in budget."""
    max_new_tokens, eos = 40, tokenizer.eos_token_id
    rows = [TRICKY_IDS, TRICKY_IDS[:2], ["a"]]
    processor = constraint(max_new_tokens).processor(rows)
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.zeros((len(rows), 1), dtype=torch.long)
    made, ended = [[] for _ in rows], [False] * len(rows)
    for _ in range(max_new_tokens):
        scores = torch.randn((len(rows), len(tokenizer)), generator=generator)
        scores[:, eos] += 3.0  # tempt each row to stop early
        chosen = processor(input_ids, scores).argmax(dim=-1).tolist()
        for i, token in enumerate(chosen):
            if ended[i]:
                chosen[i] = eos
            else:
                made[i].append(token)
                ended[i] = token == eos
        input_ids = torch.cat([input_ids, torch.tensor(chosen)[:, None]], dim=1)
        if all(ended):
            break
    for tokens, ids in zip(made, rows):
        assert_contract(reply_text(tokenizer, tokens), ids)


# Real APIBench ids: once an id is chosen its remaining bytes are forced, and llguidance then allows only
# the tokenizer's own tokenization of them ('aut' + 'otrain...', never 'auto' + 'train...'), which can take
# more tokens than the fewest that write them. A make-run batch once died there ("no token can continue").
FORCED_IDS = [
    "45473113800",
    "kochetkovIT/autotrain-ironhack-49741119788",
    "jwan2021/autotrain-jwan-autotrain1-1768961489",
    "omarques/autotrain-in-class-test-demo-1659958764",
]


@pytest.mark.parametrize("max_new_tokens", [64, 128])
def test_forced_id_tokenizations_still_close_in_budget(tokenizer, constraint, max_new_tokens):
    """A long answer, then the longest ids, steered with the longest tokens: every row closes within budget."""
    steer = Steer(constraint(max_new_tokens), tokenizer.eos_token_id)
    rows = [FORCED_IDS[:3], FORCED_IDS[1:], FORCED_IDS[::-1], FORCED_IDS]
    targets = [answer_json("Use the model " * 40, ids[::-1]) for ids in rows]
    made = steer.run(constraint(max_new_tokens).processor(rows), targets, max_new_tokens)
    for tokens, ids in zip(made, rows):
        assert len(tokens) <= max_new_tokens
        assert_contract(reply_text(tokenizer, tokens), ids)


@pytest.mark.parametrize("seed", range(4))
def test_random_choices_with_long_ids_keep_the_contract(tokenizer, constraint, seed):
    """Random logits biased towards citing: with long forced ids every reply still closes in budget."""
    max_new_tokens, eos = 64, tokenizer.eos_token_id
    rows = [FORCED_IDS, FORCED_IDS[2:], FORCED_IDS[:2]]
    processor = constraint(max_new_tokens).processor(rows)
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.zeros((len(rows), 1), dtype=torch.long)
    made, ended = [[] for _ in rows], [False] * len(rows)
    for _ in range(max_new_tokens):
        scores = torch.randn((len(rows), len(tokenizer)), generator=generator)
        scores[:, eos] -= 3.0  # keep going: long answers, then as many citations as the budget allows
        chosen = processor(input_ids, scores).argmax(dim=-1).tolist()
        for i, token in enumerate(chosen):
            if ended[i]:
                chosen[i] = eos
            else:
                made[i].append(token)
                ended[i] = token == eos
        input_ids = torch.cat([input_ids, torch.tensor(chosen)[:, None]], dim=1)
        if all(ended):
            break
    for tokens, ids in zip(made, rows):
        assert_contract(reply_text(tokenizer, tokens), ids)
