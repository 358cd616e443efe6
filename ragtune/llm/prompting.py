"""The prompt the model sees and the answer JSON it is trained to emit.

Training (RAFT examples) and serving build prompts here, so the adapter is
always asked the way it was taught. The answer contract (docs/design.md):
one JSON object `{"answer": str, "citations": [doc_id, ...]}`.
"""

from __future__ import annotations

import json
import re

# Starts with a word the base model rarely opens an answer with ("The" is its favourite): the
# adapter must learn when to abstain instead of inheriting abstention as its default reply.
NOT_COVERED = "Not covered: the documents do not answer this question."
ABSTENTION_PATTERNS = [
    r"documents? (?:do|does) not (?:cover|contain|mention|say|answer)",
    r"not covered by the documents?",
    r"(?:no|none of the) documents? (?:cover|mention|contain)",
    r"cannot (?:be )?answer(?:ed)? (?:from|with) the documents?",
]
SYSTEM_PROMPT = (
    "You answer questions using only the documents provided. Reply with one JSON object: "
    '{"answer": "...", "citations": ["<doc id>", ...]} citing the ids of the documents you used. '
    f'If the documents do not contain the answer, reply {{"answer": "{NOT_COVERED}", "citations": []}}.'
)


def format_documents(documents: list[dict]) -> str:
    """Each document as `[doc id] title` followed by its text."""
    return "\n\n".join(f"[{d['doc_id']}] {d.get('title') or d['doc_id']}\n{d['text'].strip()}" for d in documents)


def build_messages(question: str, documents: list[dict]) -> list[dict]:
    user = f"Documents:\n\n{format_documents(documents)}\n\nQuestion: {question.strip()}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def answer_json(answer: str, citations: list[str]) -> str:
    return json.dumps({"answer": answer, "citations": list(citations)}, ensure_ascii=False)


def render_example(tokenizer, question: str, documents: list[dict], target: str) -> dict:
    """Prompt and completion as the base model's chat template writes them.

    The completion is the exact suffix the template appends for the assistant
    turn (answer plus end-of-turn token), so the loss covers the answer only.
    """
    messages = build_messages(question, documents)
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": target}], tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("the chat template does not extend the prompt with the assistant turn; cannot split prompt and answer")
    # rstrip: end on the end-of-turn token itself, so TRL does not append a second one
    return {"prompt": prompt, "completion": full[len(prompt) :].rstrip()}


def parse_answer(text: str) -> dict | None:
    """The answer object if `text` is one JSON object fitting the contract, else None."""
    try:
        value = json.loads(text.strip())
    except (json.JSONDecodeError, AttributeError):
        return None
    if not isinstance(value, dict) or not isinstance(value.get("answer"), str):
        return None
    citations = value.get("citations")
    if not isinstance(citations, list) or not all(isinstance(c, str) for c in citations):
        return None
    return {"answer": value["answer"], "citations": citations}


def abstained(answer: str) -> bool:
    """The answer says the documents do not answer (the contract's NOT_COVERED, or words to that effect)."""
    text = answer.lower()
    return NOT_COVERED.lower() in text or any(re.search(p, text) for p in ABSTENTION_PATTERNS)
