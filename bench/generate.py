"""Generation speed: today's path against the fast path, on the same prompts, in one run.

Old path (what evaluation and serving did): float32, one prompt at a time, the LoRA adapter
unmerged (PEFT wrapping every projection), free decoding. New path: RAGTUNE_DTYPE=auto
(bfloat16 only where the CPU or GPU has bf16 units), prompts in left-padded batches, the adapter
merged into a private copy of the weights, decoding constrained to the answer JSON.

Prompts are real: bundled demo questions, each with three bundled API documents (its own first)
cut to 900 characters, as the production retriever would serve them; the adapter is a LoRA of the
default shape (r=16 on every projection) with random non-zero weights. Also measured: decode
tokens/s at batch 1 against the memory-bandwidth limit (every new token reads all weights once).

Target: >= 4x answers/s.

    python bench/generate.py [--prompts 16] [--batch-size 8] [--max-new-tokens 64]
"""

import argparse
import random
import time

from common import ROOT, timer, write_result

from ragtune.jsonl import read_jsonl

TARGET_SPEEDUP = 4.0


def demo_prompts(n: int) -> list[tuple[str, list[dict]]]:
    import frontmatter

    docs = {}
    for path in sorted((ROOT / "examples" / "apibench" / "docs").glob("*.md")):
        post = frontmatter.load(path)
        docs[post["id"]] = {"doc_id": post["id"], "title": post.get("title", post["id"]), "text": post.content[:900]}
    items = read_jsonl(ROOT / "examples" / "apibench" / "eval.jsonl")
    rng, ids = random.Random(0), sorted(docs)
    prompts = []
    for item in items[:n]:
        gold = [docs[d] for d in item["gold_doc_ids"] if d in docs][:1]
        prompts.append((item["question"], gold + [docs[d] for d in rng.sample(ids, 3 - len(gold))]))
    return prompts


def random_adapter(base_model: str, folder) -> str:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = LoraConfig(
        r=16,
        lora_alpha=32,
        task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_model), config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.01)
    model.save_pretrained(folder)
    return str(folder)


def memory_bandwidth_gbs(megabytes: int = 512) -> float:
    """Copy bandwidth (read + write) of a large array, GB/s: what streaming the weights can reach."""
    import numpy as np

    a = np.ones(megabytes * 2**20 // 8)
    b = np.empty_like(a)
    np.copyto(b, a)
    best = min(timed(lambda: np.copyto(b, a)) for _ in range(5))
    return 2 * a.nbytes / best / 1e9


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def decode_rate(generator, prompt, tokens: int = 64) -> float:
    """Tokens/s of the decode phase alone at batch 1: (tokens - 1) over generation time minus a 1-token run."""
    import torch

    from ragtune.llm.prompting import build_messages

    text = generator.tokenizer.apply_chat_template(build_messages(*prompt), add_generation_prompt=True, tokenize=False)
    inputs = generator.tokenizer([text], return_tensors="pt", add_special_tokens=False)

    def run(n: int) -> float:
        with torch.inference_mode():
            return timed(
                lambda: generator.model.generate(
                    **inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=generator.tokenizer.pad_token_id
                )
            )

    run(2)
    return (tokens - 1) / max(run(tokens) - run(1), 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    import tempfile
    from pathlib import Path

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ragtune.llm.base_model import resolve_base_model
    from ragtune.llm.generator import Generator
    from ragtune.precision import resolve_dtype

    prompts = demo_prompts(args.prompts)
    with tempfile.TemporaryDirectory() as tmp:
        base = resolve_base_model("", Path(tmp) / "models")
        adapter = random_adapter(base, Path(tmp) / "adapter")

        old = Generator(base, None, max_new_tokens=args.max_new_tokens, dtype="float32", batch_size=1, constrained=False)
        old.model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter).eval()
        old.generate(*prompts[0])  # warm-up
        with timer() as t_old:
            old_answers = [old.generate(q, d) for q, d in prompts]
        old_decode = decode_rate(old, prompts[0])
        del old

        new = Generator(base, adapter, max_new_tokens=args.max_new_tokens, dtype="auto", batch_size=args.batch_size)
        new.generate_batch(prompts[: args.batch_size])  # warm-up
        with timer() as t_new:
            new_answers = new.generate_batch(prompts)
        new_decode = decode_rate(new, prompts[0])
        weight_bytes = sum(p.numel() * p.element_size() for p in new.model.parameters())

    bandwidth = memory_bandwidth_gbs()
    n = len(prompts)
    old_rate, new_rate = n / t_old.seconds, n / t_new.seconds
    result = {
        "prompts": n,
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "dtype_new": resolve_dtype("auto"),
        "old_path": {
            "answers_per_s": round(old_rate, 3),
            "seconds": round(t_old.seconds, 1),
            "tokens_mean": sum(a.tokens for a in old_answers) / n,
            "format_validity": sum(a.valid for a in old_answers) / n,
            "decode_tokens_per_s_batch1": round(old_decode, 1),
        },
        "new_path": {
            "answers_per_s": round(new_rate, 3),
            "seconds": round(t_new.seconds, 1),
            "tokens_mean": sum(a.tokens for a in new_answers) / n,
            "format_validity": sum(a.valid for a in new_answers) / n,
            "decode_tokens_per_s_batch1": round(new_decode, 1),
            "generated_tokens_per_s": round(sum(a.tokens for a in new_answers) / t_new.seconds, 1),
        },
        "speedup_answers_per_s": round(new_rate / old_rate, 2),
        "memory_bandwidth_gb_s": round(bandwidth, 1),
        "weights_mb": round(weight_bytes / 1e6, 1),
        "decode_limit_tokens_per_s": round(bandwidth * 1e9 / weight_bytes, 1),
        "target": {"speedup_answers_per_s": TARGET_SPEEDUP},
        "met": {"speedup_answers_per_s": new_rate / old_rate >= TARGET_SPEEDUP},
    }
    result["new_path"]["decode_share_of_limit"] = round(new_decode / result["decode_limit_tokens_per_s"], 2)
    write_result("generate", result)


if __name__ == "__main__":
    main()
