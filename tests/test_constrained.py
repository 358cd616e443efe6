"""Constrained decoding of the answer JSON: with the real base model, and driven token by token towards chosen replies."""

import functools
import json

import numpy as np
import pytest
import torch

from ragtune.constrained import AnswerConstraint
from ragtune.prompting import answer_json, build_messages, parse_answer

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

    texts = [tokenizer.apply_chat_template(build_messages(q, docs), tokenize=False, add_generation_prompt=True) for q, docs in rows]
    inputs = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    processor = constraint.processor([[d["doc_id"] for d in docs] for _, docs in rows])
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=constraint.max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                             logits_processor=LogitsProcessorList([processor]))
    return tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


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
        ("Which model spots keywords in speech?",
         [document("superb/wav2vec2-base-superb-ks", "Keyword spotting on SUPERB: pipeline('audio-classification', "
                   "model='superb/wav2vec2-base-superb-ks')."), document("docs/a b.md", "Cooking pasta.")]),
        ("How do I summarize news articles?",
         [document("facebook/bart-large-cnn", "Summarize news with pipeline('summarization', model='facebook/bart-large-cnn').")]),
        ("How do I greet someone?", [document('say "hi"\\now', "To greet someone, say hi."), document("t5-small", "Translate text.")]),
    ]
    replies = generate(model, tokenizer, constraint(64), rows)
    for reply, (_, docs) in zip(replies, rows):
        assert_contract(reply, [d["doc_id"] for d in docs])


def test_a_tiny_budget_still_closes_the_json(model, tokenizer, constraint):
    rows = [("Explain in detail how to fine-tune a speech model, step by step.",
             [document("superb/wav2vec2-base-superb-ks", "Keyword spotting. " * 20)])]
    (reply,) = generate(model, tokenizer, constraint(24), rows)
    assert_contract(reply, ["superb/wav2vec2-base-superb-ks"])


class Steer:
    """Drives a processor as greedy generate() does, with logits that prefer the longest token continuing `target`.

    Where the grammar refuses the target (a repeated or foreign id, a reply over budget), the processor's
    mask decides and the reply departs from the target. Rows that ended are padded with EOS, as generate() does.
    """

    def __init__(self, constraint: AnswerConstraint, eos: int):
        info = constraint.tokenizer_info
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
            remaining = target[len(made):]
            for t in self.by_first_byte.get(remaining[0], []):
                if remaining.startswith(self.pieces[t]):
                    scores[t] = len(self.pieces[t])
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


@pytest.mark.parametrize("answer", ["word " * 200, "line\n" * 200, "😀 é" * 150, "a\"😀\\" * 100])
@pytest.mark.parametrize("max_new_tokens", [16, 40])
def test_an_answer_longer_than_the_budget_is_cut_and_closed_in_budget(tokenizer, constraint, steer, answer, max_new_tokens):
    processor = constraint(max_new_tokens).processor([TRICKY_IDS[:2]])
    (tokens,) = steer.run(processor, [answer_json(answer, TRICKY_IDS[:2])], max_new_tokens)
    parsed = assert_contract(reply_text(tokenizer, tokens), TRICKY_IDS[:2])  # EOS came within max_new_tokens steps
    assert answer.startswith(parsed["answer"]) and parsed["answer"]


def test_a_row_that_finishes_early_leaves_the_others_alone(tokenizer, constraint, steer):
    ids = [["a"], ["docs/a b.md", "superb/wav2vec2-base-superb-ks"], []]
    targets = [answer_json("No.", []), answer_json("A longer answer, " * 4, ids[1][::-1]), answer_json("Somewhat longer than the first.", [])]
    processor = constraint(160).processor(ids)
    made = steer.run(processor, targets, 160)
    assert [reply_text(tokenizer, m) for m in made] == targets
    assert len(made[0]) < len(made[2]) < len(made[1])  # rows ended at different steps, padded after


def test_a_budget_too_small_for_any_answer_is_refused(tokenizer):
    with pytest.raises(ValueError, match="no room for an answer"):
        AnswerConstraint(tokenizer, 12).processor([["a"]])
