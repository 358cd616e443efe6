"""LoRA training throughput: the project's TRL path against a plain PyTorch loop, in the same run.

Both train the bundled base model with the LoRA settings of training/configs/default.yaml on the
same RAFT-style examples (APIBench demo questions with their gold document), batch B, no gradient
accumulation, S optimizer steps. Throughput is non-padding tokens per second over the steps
themselves: model loading, dataset preparation and the first (warm-up) step are left out of both.

- project: `training.sft.train`, timed by its own per-step MLflow metrics (`tokens_per_second`
  from the StepMetrics callback, `num_input_tokens_seen` from the Trainer's log), read back from
  the run; each step's window runs from the end of the previous step to the end of this one, so it
  includes batch collation, logging and the optimizer step.
- baseline: `from_pretrained` + `peft.get_peft_model` + AdamW, forward with labels, backward, step;
  timed the same way (end of previous step to end of this one, collation included).

The baseline replays the project's batches (recorded from TRL's collator), so both see the same
examples in the same groups, hence the same padding; `same_batches` says whether that held.
With --rounds R > 1 the paths alternate (P B, B P, ...) and their timed steps are pooled.
Target: project >= 0.9 x baseline.

    python bench/train.py [--steps 8] [--batch 2] [--examples 64] [--max-length 768] [--rounds 1]
"""

import argparse
import contextlib
import gc
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import frontmatter
import torch
from common import ROOT, machine, write_result

from ragtune.jsonl import read_jsonl, write_jsonl
from ragtune.llm.base_model import resolve_base_model
from ragtune.llm.prompting import answer_json, render_example
from ragtune.settings import load_settings
from training.config import SftConfig
from training.order import ORDERS

DEMO = ROOT / "examples" / "apibench"
DEFAULT_YAML = ROOT / "training" / "configs" / "default.yaml"
TARGET = 0.9


def truncate_words(text: str, words: int) -> str:
    """The first `words` words of `text`, keeping its line breaks and indentation."""
    match = re.match(rf"\s*(?:\S+\s+){{0,{words - 1}}}\S+", text)
    return match.group(0) if match else text


def build_examples(tokenizer, n: int, doc_words: int) -> list[dict]:
    """n prompt/completion rows: each demo question with its gold document (cycled if n > 139)."""
    docs = {}
    for path in sorted((DEMO / "docs").glob("*.md")):
        post = frontmatter.load(path)
        docs[str(post["id"])] = {"title": str(post.get("title") or post["id"]), "text": truncate_words(post.content, doc_words)}
    rows = read_jsonl(DEMO / "interactions.jsonl")
    rows = [r for r in rows if r.get("citations") and r["citations"][0].get("doc_id") in docs]
    if not rows:
        raise SystemExit(f"no demo interaction cites a document in {DEMO / 'docs'}")
    examples = []
    for i in range(n):
        row = rows[i % len(rows)]
        doc_id = row["citations"][0]["doc_id"]
        document = {"doc_id": doc_id, **docs[doc_id]}
        examples.append(render_example(tokenizer, row["question"], [document], answer_json(row["answer"], [doc_id])))
    return examples


def tokenize(tokenizer, example: dict, max_length: int) -> tuple[list[int], list[int]]:
    """input_ids and labels (-100 on the prompt), prompt + completion + EOS, truncated like TRL (keep start)."""
    completion = example["completion"]
    if not completion.endswith(tokenizer.eos_token):
        completion += tokenizer.eos_token
    prompt_ids = tokenizer(example["prompt"])["input_ids"]
    ids = tokenizer(example["prompt"] + completion)["input_ids"]
    prompt_len = 0
    while prompt_len < min(len(prompt_ids), len(ids)) and prompt_ids[prompt_len] == ids[prompt_len]:
        prompt_len += 1
    labels = [-100] * prompt_len + ids[prompt_len:]
    return ids[:max_length], labels[:max_length]


class BatchRecorder:
    """Records the unpadded token rows of each batch TRL's collator builds (the project's batch order)."""

    def __init__(self):
        from trl.trainer import sft_trainer

        self.cls = sft_trainer.DataCollatorForLanguageModeling
        self.original = self.cls.torch_call
        self.batches: list[list[tuple[int, ...]]] = []

    def __enter__(self):
        original, batches = self.original, self.batches

        def torch_call(collator, examples):
            out = original(collator, examples)
            mask = out.get("attention_mask")
            if mask is not None:
                batches.append([tuple(row[m.bool()].tolist()) for row, m in zip(out["input_ids"], mask)])
            return out

        self.cls.torch_call = torch_call
        return self

    def __exit__(self, *exc):
        self.cls.torch_call = self.original


def step_rates(tracking_uri: str, run_id: str) -> list[tuple[int, int, float]]:
    """(step, non-padding tokens, seconds) for each optimizer step, from the run's per-step metrics."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    rates = {m.step: m.value for m in client.get_metric_history(run_id, "tokens_per_second")}
    seen = {m.step: m.value for m in client.get_metric_history(run_id, "num_input_tokens_seen")}
    steps, previous = [], 0.0
    for step in sorted(rates):
        tokens = int(seen[step] - previous)
        previous = seen[step]
        steps.append((step, tokens, tokens / rates[step] if rates[step] > 0 else float("inf")))
    return steps


def run_project(config: SftConfig) -> dict:
    from training.sft import train

    # the Trainer's progress callback writes its logs to stdout; keep stdout for the one result line
    with BatchRecorder() as recorder, contextlib.redirect_stdout(sys.stderr):
        summary = train(config)
    steps = step_rates(config.tracking_uri, summary["run_id"])
    return {"summary": summary, "steps": steps, "batches": recorder.batches[: len(steps)]}


def run_baseline(
    base: str,
    config: SftConfig,
    batches: list[list[int]],
    rows: list[tuple[list[int], list[int]]],
    pad_id: int,
    device: torch.device,
) -> list[tuple[int, int, float]]:
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(config.seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).to(device)
    lora = config.lora_config()
    model = get_peft_model(model, lora)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate, weight_decay=0.0)
    # the Trainer trains in bf16 mixed precision where the GPU supports it; do the same here
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and torch.cuda.is_bf16_supported())

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    steps = []
    sync()
    last = time.perf_counter()
    for number, indices in enumerate(batches, start=1):
        width = max(len(rows[i][0]) for i in indices)
        input_ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
        labels = torch.full((len(indices), width), -100, dtype=torch.long)
        attention = torch.zeros((len(indices), width), dtype=torch.long)
        for r, i in enumerate(indices):
            ids, lab = rows[i]
            input_ids[r, : len(ids)] = torch.tensor(ids)
            labels[r, : len(lab)] = torch.tensor(lab)
            attention[r, : len(ids)] = 1
        tokens = int(attention.sum())
        input_ids, labels, attention = input_ids.to(device), labels.to(device), attention.to(device)
        with autocast:
            loss = model(input_ids=input_ids, attention_mask=attention, labels=labels, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # a plain loop logs its loss; also waits for the GPU
        sync()
        now = time.perf_counter()
        steps.append((number, tokens, now - last))
        last = now
    del model, optimizer
    return steps


def throughput(steps: list[tuple[int, int, float]]) -> tuple[float, int, float]:
    """Tokens per second over the given steps, with the tokens and seconds."""
    tokens = sum(t for _, t, _ in steps)
    seconds = sum(s for _, _, s in steps)
    return tokens / seconds, tokens, seconds


def median_rate(steps: list[tuple[int, int, float]]) -> float:
    """Median of the per-step rates: less swayed than the total by a step that other work slowed down."""
    return statistics.median(t / s for _, t, s in steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps in each path (S)")
    parser.add_argument("--batch", type=int, default=2, help="per-device batch size (B); no gradient accumulation")
    parser.add_argument("--examples", type=int, default=64, help="training examples written (N)")
    parser.add_argument("--max-length", type=int, default=768)
    parser.add_argument("--doc-words", type=int, default=200, help="gold document truncated to this many words")
    parser.add_argument("--warmup", type=int, default=1, help="leading steps left out of the timing in both paths")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each path, alternating (P B, B P, ...), pooled")
    parser.add_argument(
        "--batch-order",
        choices=ORDERS,
        default="stratified",
        help="the project's training order (training/order.py); the baseline replays its batches",
    )
    args = parser.parse_args()
    if args.steps <= args.warmup:
        raise SystemExit("--steps must exceed --warmup")

    from transformers import AutoTokenizer

    settings = load_settings()
    base = resolve_base_model("", settings.models_dir)  # converts the bundled GGUF once; not timed
    tokenizer = AutoTokenizer.from_pretrained(base)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    work = Path(tempfile.mkdtemp(prefix="ragtune-bench-train-"))
    examples = build_examples(tokenizer, args.examples, args.doc_words)
    train_file = work / "train.jsonl"
    write_jsonl(train_file, examples)

    config = SftConfig.from_yaml(
        DEFAULT_YAML,
        train_file=str(train_file),
        validation_file="",
        base_model="",
        models_dir=str(settings.models_dir),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        max_length=args.max_length,
        batch_order=args.batch_order,
        eval_at_end=False,
        tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
        artifact_location=str(work / "mlartifacts"),
        experiment="bench-train",
        run_name="bench-train",
        registered_model="",
    )

    rows = [tokenize(tokenizer, e, args.max_length) for e in examples]  # the baseline's own tokenization
    by_ids = {tuple(ids): i for i, (ids, _) in enumerate(rows)}
    projects, baselines, batches, same_batches = [], [], None, True
    # Rounds alternate P B, B P, P B ... so that a slow drift in machine load falls on both paths alike.
    for r in range(args.rounds):
        order = ("project", "baseline") if r % 2 == 0 or batches is None else ("baseline", "project")
        for path in order:
            if path == "project":
                project = run_project(replace(config, output_dir=str(work / f"run{r}"), run_name=f"bench-train-{r}"))
                projects.append(project)
                if batches is None:  # the baseline replays these batches, matched by token sequence
                    batches = [[by_ids.get(seq) for seq in batch] for batch in project["batches"]]
                    same_batches = len(batches) == len(project["steps"]) and all(i is not None for b in batches for i in b)
                    if not same_batches:  # fall back to the data in file order, batch by batch
                        batches = [[(s * args.batch + j) % len(rows) for j in range(args.batch)] for s in range(args.steps)]
            else:
                baselines.append(run_baseline(base, config, batches, rows, tokenizer.pad_token_id, device))
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    tokens_of = lambda steps: [t for _, t, _ in steps]  # noqa: E731
    same_batches = same_batches and all(tokens_of(p["steps"]) == tokens_of(b) for p, b in zip(projects, baselines))

    project_steps = [s for p in projects for s in p["steps"][args.warmup :]]
    baseline_steps = [s for b in baselines for s in b[args.warmup :]]
    project_tps, project_tokens, project_s = throughput(project_steps)
    baseline_tps, baseline_tokens, baseline_s = throughput(baseline_steps)
    ratio = project_tps / baseline_tps
    median_ratio = median_rate(project_steps) / median_rate(baseline_steps)
    cuda_name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    rounded = lambda steps: [{"step": s, "tokens": t, "seconds": round(sec, 3)} for s, t, sec in steps]  # noqa: E731
    write_result(
        "train",
        {
            "machine": {
                "description": machine(),
                "cpu_count": os.cpu_count(),
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
                "cuda_device": cuda_name,
            },
            "config": {
                "base_model": "bundled SmolLM2-135M-Instruct (float32)",
                "device": device.type,
                "mixed_precision": "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "none",
                "examples": len(examples),
                "max_length": args.max_length,
                "doc_words": args.doc_words,
                "lora_r": config.lora_r,
                "lora_alpha": config.lora_alpha,
                "lora_dropout": config.lora_dropout,
                "target_modules": list(config.target_modules),
                "learning_rate": config.learning_rate,
                "gradient_accumulation_steps": 1,
                "batch_order": config.batch_order,
                "warmup_steps_excluded": args.warmup,
                "rounds": args.rounds,
                "baseline_optimizer": "torch.optim.AdamW (foreach), weight_decay 0; project: Trainer default (adamw_torch_fused, grad clipping 1.0)",
            },
            "steps": args.steps,
            "batch": args.batch,
            "same_batches": same_batches,
            "project_tokens_per_s": round(project_tps, 1),
            "baseline_tokens_per_s": round(baseline_tps, 1),
            "ratio": round(ratio, 3),
            "target": TARGET,
            "meets_target": ratio >= TARGET,
            "ratio_of_median_step_rates": round(median_ratio, 3),
            "tokens_counted": {"project": project_tokens, "baseline": baseline_tokens},
            "timed_seconds": {"project": round(project_s, 2), "baseline": round(baseline_s, 2)},
            "per_round_tokens_per_s": {
                "project": [round(throughput(p["steps"][args.warmup :])[0], 1) for p in projects],
                "baseline": [round(throughput(b[args.warmup :])[0], 1) for b in baselines],
            },
            "per_step": {"project": [rounded(p["steps"]) for p in projects], "baseline": [rounded(b) for b in baselines]},
            "project_end_to_end_tokens_per_s": [round(p["summary"]["metrics"]["tokens_per_second"], 1) for p in projects],
            "project_train_seconds": [round(p["summary"]["metrics"]["train_seconds"], 2) for p in projects],
        },
    )
    shutil.rmtree(work, ignore_errors=True)  # the runs' adapters and MLflow store


if __name__ == "__main__":
    main()
