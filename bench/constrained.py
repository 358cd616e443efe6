"""Constrained decoding of the answer JSON: what llguidance, xgrammar and outlines-core cost per token.

Real prompts (build_messages + the chat template) from the bundled APIBench demo: a held-out question,
its gold document and the next two documents, each cut to 800 characters (about one retrieved chunk).
The default base model decodes greedily on CPU; every configuration (unconstrained, then each
library) runs on the same prompts back to back, at batch 1 (--prompts prompts, one at a time) and at
batch 8 (--rounds rounds), so the machine's load hits them alike and the ratios are paired.

- ms per decode step: timestamps taken by a logits processor at every step (prefill excluded);
  for batch 8 one step makes 8 tokens. The unconstrained run is held to --new-tokens steps
  (min_new_tokens); constrained runs stop when their JSON closes.
- ratio: constrained / unconstrained ms per step of the same prompt(s); median and range.
- processor ms per step: wall time inside the constraint's logits processor, its own cost, which
  the machine's load (a shared CPU) disturbs far less than the end-to-end ratio.
- compile ms per prompt: grammar text to a ready matcher, for the row's own document ids;
  tokenizer setup (once per tokenizer) is reported apart.
- valid: replies that parse with prompting.parse_answer and cite only the row's ids.

Each library gets the same language: json.dumps layout, the answer text as a JSON string without
\\u escapes, citations an ordered selection without repeats of the row's ids. llguidance is the
shipped ragtune.llm.constrained (answer bounded in tokens, citations as exact token sequences); xgrammar
and outlines-core take the same bound in characters and the ids as strings.

Only llguidance is a project dependency; the others are compared when installed (xgrammar without its
triton dependency, which serves CUDA only):

    .venv/bin/pip install --no-deps xgrammar==0.2.9 apache-tvm-ffi==0.1.15.post2 outlines-core==0.2.14
    python bench/constrained.py [--prompts 4] [--rounds 2] [--new-tokens 48] [--threads 2]
"""

import argparse
import functools
import importlib.util
import itertools
import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

from common import ROOT, write_result

from ragtune.jsonl import read_jsonl

DEMO = ROOT / "examples" / "apibench"
CHUNK_CHARS = 800
MODULES = {"llguidance": "llguidance", "xgrammar": "xgrammar", "outlines-core": "outlines_core"}  # those installed are compared
OPENING, MIDDLE, CLOSING = '{"answer": "', '", "citations": [', "]}"
XGRAMMAR_CHAR = r'char ::= [^"\\\x00-\x1f] | "\\" ["\\bfnrt]'


def demo_prompts(n: int) -> list[tuple[str, list[dict]]]:
    """(question, 3 documents): the gold document first, then the two after it in id order."""
    import frontmatter

    docs = {}
    for path in sorted((DEMO / "docs").glob("*.md")):
        post = frontmatter.load(path)
        docs[str(post["id"])] = {"doc_id": str(post["id"]), "title": post.get("title"), "text": post.content[:CHUNK_CHARS]}
    order = list(docs)
    items = read_jsonl(DEMO / "eval.jsonl")
    prompts = []
    for item in items:
        gold = [d for d in item["gold_doc_ids"] if d in docs]
        if gold:
            at = order.index(gold[0])
            prompts.append((item["question"], [docs[order[(at + k) % len(order)]] for k in range(3)]))
    return prompts[:n]


def answer_language(doc_ids: list[str], max_chars: int, max_citations: int) -> tuple[str, list[str]]:
    """The answer text as a regex and every allowed citation list as JSON text, for the character-bounded libraries."""
    char = r'([^"\\\x00-\x1f]|\\["\\bfnrt])'
    quoted = [json.dumps(d, ensure_ascii=False) for d in dict.fromkeys(doc_ids)]
    lists = [", ".join(p) for k in range(max_citations + 1) for p in itertools.permutations(quoted, k)]
    return f"{char}{{1,{max_chars}}}", lists


class Clock:
    """A logits processor that only notes when each decode step reaches it."""

    def __init__(self):
        self.times = []

    def __call__(self, input_ids, scores):
        self.times.append(time.perf_counter())
        return scores

    def ms_per_step(self) -> float:
        return 1000 * (self.times[-1] - self.times[0]) / max(1, len(self.times) - 1)


class Timed:
    """Wraps a logits processor and keeps the wall time of each call: the constraint's own cost per step."""

    def __init__(self, processor):
        self.processor, self.seconds = processor, []

    def __call__(self, input_ids, scores):
        start = time.perf_counter()
        scores = self.processor(input_ids, scores)
        self.seconds.append(time.perf_counter() - start)
        return scores


class MaskProcessor:
    """Shared loop for the libraries benchmarked through their own matchers: accept last tokens, fill, mask."""

    def __init__(self, matchers, vocab: int, eos: int):
        import torch

        self.matchers, self.eos, self.started = matchers, eos, False
        self.done = [False] * len(matchers)
        self.bitmask = torch.full((len(matchers), (vocab + 31) // 32), -1, dtype=torch.int32)
        self.shifts = torch.arange(32, dtype=torch.int32)

    def __call__(self, input_ids, scores):
        if self.started:
            for i, token in enumerate(input_ids[:, -1].tolist()):
                if not self.done[i]:
                    self.done[i] = token == self.eos or not self.accept(i, token)
        self.started = True
        self.fill([i for i, d in enumerate(self.done) if not d])
        allowed = ((self.bitmask.unsqueeze(-1) >> self.shifts) & 1).bool().view(len(self.matchers), -1)
        allowed[self.done] = False
        allowed[self.done, self.eos] = True
        return scores.masked_fill(~allowed[:, : scores.shape[-1]], float("-inf"))


class XGrammarProcessor(MaskProcessor):
    def __init__(self, matchers, vocab, eos):
        import xgrammar

        super().__init__(matchers, vocab, eos)
        self.batch = xgrammar.BatchGrammarMatcher(max_threads=2)

    def accept(self, i, token):
        return self.matchers[i].accept_token(token) and not self.matchers[i].is_terminated()

    def fill(self, rows):
        self.batch.batch_fill_next_token_bitmask([self.matchers[i] for i in rows], self.bitmask, rows)


class OutlinesProcessor(MaskProcessor):
    def accept(self, i, token):
        self.matchers[i].advance(token, return_tokens=False)
        return True

    def fill(self, rows):
        for i in rows:
            row = self.bitmask[i]
            self.matchers[i].write_mask_into(row.data_ptr(), row.numel(), row.element_size())


class Libraries:
    """Each installed library's tokenizer setup (timed once) and per-prompt processor construction (timed per row)."""

    def __init__(self, tokenizer, max_new_tokens: int):
        from ragtune.llm.constrained import AnswerConstraint

        self.names = [name for name, module in MODULES.items() if importlib.util.find_spec(module)]
        self.eos, self.vocab = tokenizer.eos_token_id, len(tokenizer)
        self.setup_ms = {}
        start = time.perf_counter()
        self.llg = AnswerConstraint(tokenizer, max_new_tokens)  # also the budgets the other libraries get
        self.setup_ms["llguidance"] = 1000 * (time.perf_counter() - start)
        if "xgrammar" in self.names:
            import xgrammar

            start = time.perf_counter()
            info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=self.vocab)
            self.xgr = xgrammar.GrammarCompiler(info, max_threads=2, cache_enabled=False)
            self.setup_ms["xgrammar"] = 1000 * (time.perf_counter() - start)
        if "outlines-core" in self.names:
            import outlines_core

            start = time.perf_counter()
            by_bytes = {}
            for t in range(self.vocab):  # outlines-core's own loader goes to the Hub, even for a local path
                if not self.llg.tokenizer_info.is_special_token(t):
                    by_bytes.setdefault(self.llg.tokenizer_info.decode_bytes([t]), []).append(t)
            self.outlines_vocab = outlines_core.Vocabulary(self.eos, by_bytes)
            self.setup_ms["outlines-core"] = 1000 * (time.perf_counter() - start)
        self.versions = {name: version(name) for name in self.names}
        self.compile_ms = {name: [] for name in self.names}

    def processor(self, library: str, doc_ids_per_row: list[list[str]]):
        start = time.perf_counter()
        if library == "llguidance":
            made = self.llg.processor(doc_ids_per_row)
        else:
            matchers = [self.matcher(library, ids) for ids in doc_ids_per_row]
            made = (XGrammarProcessor if library == "xgrammar" else OutlinesProcessor)(matchers, self.vocab, self.eos)
        self.compile_ms[library].append(1000 * (time.perf_counter() - start) / len(doc_ids_per_row))
        return made

    def matcher(self, library: str, doc_ids: list[str]):
        import outlines_core
        import xgrammar

        _, budget = self.llg.grammar(doc_ids)  # the same bound and citation count as the shipped constraint
        answer, lists = answer_language(doc_ids, budget.answer, budget.max_citations)
        if library == "xgrammar":
            lit = lambda text: json.dumps(text, ensure_ascii=False)  # noqa: E731 (an EBNF string literal)
            ebnf = "\n".join(
                [
                    f"root ::= {lit(OPENING)} answer {lit(MIDDLE)} cites {lit(CLOSING)}",
                    f"answer ::= char{{1,{budget.answer}}}",
                    XGRAMMAR_CHAR,
                    "cites ::= " + " | ".join(lit(s) for s in lists),
                ]
            )
            return xgrammar.GrammarMatcher(self.xgr.compile_grammar(ebnf))
        regex = "".join(
            [re.escape(OPENING), answer, re.escape(MIDDLE), "(", "|".join(map(re.escape, lists)), ")", re.escape(CLOSING)]
        )
        return outlines_core.Guide(outlines_core.Index(regex, self.outlines_vocab))


def generate(
    model, tokenizer, libraries: Libraries, new_tokens: int, batch: list[tuple[str, list[dict]]], library: str | None
) -> dict:
    """One greedy generate() of a left-padded batch, unconstrained (library None) or under a library's constraint."""
    import torch
    from transformers import LogitsProcessorList

    from ragtune.llm.prompting import build_messages, parse_answer

    texts = [
        tokenizer.apply_chat_template(build_messages(q, docs), tokenize=False, add_generation_prompt=True) for q, docs in batch
    ]
    inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    ids = [[d["doc_id"] for d in docs] for _, docs in batch]
    clock = Clock()
    timed = Timed(libraries.processor(library, ids)) if library else None
    processors = [clock] + ([timed] if timed else [])
    with torch.inference_mode():
        out = model.generate(
            **inputs,
            max_new_tokens=new_tokens,
            min_new_tokens=0 if library else new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            logits_processor=LogitsProcessorList(processors),
        )
    replies = tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    parsed = [parse_answer(r) for r in replies]
    valid = sum(p is not None and set(p["citations"]) <= set(row) for p, row in zip(parsed, ids))
    return {
        "ms_per_step": clock.ms_per_step(),
        "steps": len(clock.times),
        "valid": valid,
        "rows": len(batch),
        "example": replies[0],
        "processor_ms_per_step": 1000 * statistics.mean(timed.seconds) if timed else 0.0,
    }


def version(package: str) -> str:
    from importlib.metadata import version as installed

    return installed(package)


def spread(values: list[float]) -> dict:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "n": len(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=4, help="prompts decoded one at a time (batch 1)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of one batch of 8 prompts")
    parser.add_argument("--new-tokens", type=int, default=48, help="max_new_tokens (the budget the constraint closes within)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--name", default="constrained")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ragtune.llm.base_model import resolve_base_model
    from ragtune.settings import load_settings

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("RAGTUNE_HOME", str(Path(tmp) / "home"))
        settings = load_settings()
        base_model = resolve_base_model(settings.base_model, settings.models_dir)
        tokenizer = AutoTokenizer.from_pretrained(base_model, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32).eval()
        libraries = Libraries(tokenizer, args.new_tokens)
        prompts = demo_prompts(max(args.prompts, 8))
        run = functools.partial(generate, model, tokenizer, libraries, args.new_tokens)
        run(prompts[:1], None)  # warm-up: first-call costs belong to no configuration

        results = {}
        for batch_size, batches in ((1, [[p] for p in prompts[: args.prompts]]), (8, [prompts[:8]] * args.rounds)):
            runs = {name: [] for name in ("none", *libraries.names)}
            for k, batch in enumerate(batches):
                names = list(runs)
                for name in names[k % len(names) :] + names[: k % len(names)]:  # rotated: no configuration always runs first
                    runs[name].append(run(batch, None if name == "none" else name))
            results[f"batch_{batch_size}"] = {
                name: {
                    "ms_per_step": spread([r["ms_per_step"] for r in rs]),
                    "processor_ms_per_step": spread([r["processor_ms_per_step"] for r in rs]),
                    "ratio": None
                    if name == "none"
                    else spread([r["ms_per_step"] / b["ms_per_step"] for r, b in zip(rs, runs["none"])]),
                    "steps_mean": round(statistics.mean(r["steps"] for r in rs), 1),
                    "valid": f"{sum(r['valid'] for r in rs)}/{sum(r['rows'] for r in rs)}",
                    "example": rs[0]["example"],
                }
                for name, rs in runs.items()
            }

    write_result(
        args.name,
        {
            "model": "SmolLM2-135M-Instruct (bundled GGUF, de-quantized, float32)",
            "torch_threads": args.threads,
            "new_tokens": args.new_tokens,
            "prompts_batch_1": args.prompts,
            "rounds_batch_8": args.rounds,
            "versions": libraries.versions,
            "tokenizer_setup_ms": {k: round(v, 1) for k, v in libraries.setup_ms.items()},
            "compile_ms_per_prompt": {k: spread(v) for k, v in libraries.compile_ms.items()},
            **results,
            "seconds": round(time.perf_counter() - started, 1),
        },
    )


if __name__ == "__main__":
    main()
