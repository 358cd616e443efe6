"""LoRA supervised fine-tuning with TRL, tracked in MLflow. Runs on its own:

    python -m training.sft --config training/configs/default.yaml --train-file DIR/train.jsonl

Reads a RAFT dataset (jsonl rows with `prompt` and `completion`, as written by
the `raft_dataset` asset), trains a PEFT LoRA on the base model with the loss on
the completion only, and logs parameters, per-step loss, non-padding tokens per
second and the adapter to MLflow. Saves the adapter only, and registers it as a
new version when `registered_model` is set. Launched by the `lora_adapter`
asset through Dagster Pipes (a local subprocess by default; the same command on
a GPU node), in which case the run id and metrics go back to Dagster.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: no code path may need the internet

from torch.utils.data import Sampler  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from trl import SFTTrainer  # noqa: E402

from ragtune.precision import resolve_dtype  # noqa: E402
from training.config import SftConfig  # noqa: E402

log = logging.getLogger("training.sft")


def load_split(path: str):
    from datasets import load_dataset

    return load_dataset("json", data_files=path, split="train").select_columns(["prompt", "completion"])


class StratifiedSampler(Sampler):
    """training/order.py's order over the Trainer's prepared rows (tokenised, truncated), drawn anew each epoch.

    Lengths and "not covered" targets are read from the rows the Trainer will batch, so a row TRL
    dropped (an answer cut off entirely by truncation) cannot shift the batches.
    """

    def __init__(self, dataset, tokenizer, batch_size: int, seed: int):
        from training.order import abstains

        self.lengths = [len(ids) for ids in dataset["input_ids"]]
        self.abstain = [abstains(tokenizer.decode([t for t in labels if t != -100])) for labels in dataset["labels"]]
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:  # the Trainer calls it at each epoch
        self.epoch = epoch

    def order(self) -> list[int]:
        from training.order import stratified_order

        return stratified_order(self.lengths, self.abstain, self.batch_size, self.seed + self.epoch)

    def longest_abstention_run(self) -> int:
        from training.order import longest_run

        return longest_run([self.abstain[i] for i in self.order()], self.batch_size)

    def __iter__(self):
        return iter(self.order())

    def __len__(self) -> int:
        return len(self.lengths)


class LoraSFTTrainer(SFTTrainer):
    """TRL's SFTTrainer; without a GPU, the loss from logits of the completion positions only.

    TRL computes per-token log-probabilities through a chunked "fused LM head" that also
    measures entropy and token accuracy. On a GPU that saves memory; on a CPU it costs about
    a third more time per step, and so does the model's own loss, which projects every prompt
    position onto the 49k-token vocabulary although only the answer (about 60 of 800 tokens)
    is scored. Here the LM head runs from the first answer position on (`logits_to_keep`):
    the same loss, about 1.5x the tokens/s on 2 cores (bench/train.py).
    """

    lead_tokens, lead_weight = 0, 1.0  # see completion_loss
    batch_order = "random"  # "stratified": StratifiedSampler; else the sampler TrainingArguments name

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.batch_order != "stratified" or dataset is None or "labels" not in getattr(dataset, "column_names", ()):
            return super()._get_train_sampler(train_dataset)
        return StratifiedSampler(dataset, self.processing_class, self.args.train_batch_size, self.args.seed)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.args.device.type == "cuda" and self.lead_weight == 1.0:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        return completion_loss(model, inputs, return_outputs, num_items_in_batch, self.lead_tokens, self.lead_weight)


def completion_loss(model, inputs, return_outputs=False, num_items_in_batch=None, lead_tokens: int = 0, lead_weight: float = 1.0):
    """Causal-LM cross-entropy over the labelled (answer) tokens, with logits only where a label follows.

    `lead_weight` multiplies the loss of each answer's first `lead_tokens` tokens. The answer JSON
    opens with `{"answer": "` and then one token that decides everything after it: an answer
    ("Use ...") or an abstention ("Not covered ..."). In a plain per-token mean that decision is
    1 of about 60 tokens, while the rest is easy copying from the documents; weighting the lead
    makes the decision worth learning (docs/loop.md and docs/retraining.md, "the recipe").
    """
    import torch.nn.functional as F

    labels = inputs["labels"]
    scored = labels != -100
    length = labels.shape[1]
    first = int(scored.float().argmax(dim=1)[scored.any(dim=1)].min()) if scored.any() else length - 1
    keep = length - first + 1  # the logit at position first-1 predicts the first answer token
    forward = {k: v for k, v in inputs.items() if k not in ("labels", "completion_mask")}
    outputs = model(**forward, use_cache=False, logits_to_keep=keep)
    logits = outputs.logits[:, :-1].float()
    targets = labels[:, length - logits.shape[1] :]
    losses = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="none"
    ).view_as(targets)
    if lead_tokens > 0 and lead_weight != 1.0:
        rank = (targets != -100).cumsum(dim=1)  # 1 for each answer's first token, 2 for its second ...
        losses = losses * (1 + (lead_weight - 1) * ((rank >= 1) & (rank <= lead_tokens)))
    loss = losses.sum() / (num_items_in_batch if num_items_in_batch is not None else scored.sum().clamp(min=1))
    return (loss, outputs) if return_outputs else loss


class TimeBudget(TrainerCallback):
    """Stop training before the next step would end past `minutes` of wall clock (0: no budget).

    The next step is assumed to take as long as the slowest so far, so the run ends inside the budget.
    """

    def __init__(self, minutes: float, clock=time.perf_counter):
        self.seconds, self.clock = minutes * 60, clock
        self.started = self.last = None
        self.slowest, self.stopped_early = 0.0, False

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = self.last = self.clock()

    def on_step_end(self, args, state, control, **kwargs):
        now = self.clock()
        self.slowest, self.last = max(self.slowest, now - self.last), now
        if self.seconds > 0 and now - self.started + self.slowest > self.seconds and state.global_step < state.max_steps:
            control.should_training_stop = self.stopped_early = True


class StepMetrics(TrainerCallback):
    """Per-step loss and non-padding tokens/s to the active MLflow run."""

    def __init__(self):
        self.last_time, self.last_tokens = None, 0
        self.steps: list[tuple[int, float]] = []  # (tokens, seconds) per optimizer step

    def steady_rate(self) -> float | None:
        """Tokens/s over every step but the first (which pays for warm-up); None before two steps."""
        if len(self.steps) < 2:
            return None
        return sum(t for t, _ in self.steps[1:]) / max(sum(s for _, s in self.steps[1:]), 1e-9)

    def on_step_begin(self, args, state, control, **kwargs):
        if self.last_time is None:
            self.last_time, self.last_tokens = time.perf_counter(), state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        import mlflow

        now = time.perf_counter()
        tokens, seconds = state.num_input_tokens_seen - self.last_tokens, now - self.last_time
        self.steps.append((tokens, seconds))
        mlflow.log_metric("tokens_per_second", tokens / max(seconds, 1e-9), step=state.global_step)
        self.last_time, self.last_tokens = now, state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        import mlflow

        numeric = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float)) and k != "epoch"}
        if numeric:
            mlflow.log_metrics(numeric, step=state.global_step)


class CollapseError(RuntimeError):
    """The adapter gives (nearly) one reply to every prompt: a recipe failure, never registered."""


def answers_collapsed(replies: list[str], oracle: list[bool]) -> str | None:
    """Why these validation replies show a collapsed adapter, or None.

    Collapsed: one and the same reply to every prompt (at least 4), or an abstention to every prompt
    whose context holds the answer (at least 2 such prompts).
    """
    from ragtune.llm.prompting import NOT_COVERED, parse_answer

    answers = [(parse_answer(r) or {"answer": r.strip()})["answer"] for r in replies]
    if len(answers) >= 4 and len(set(answers)) == 1:
        return f"the adapter gives one reply to all {len(answers)} validation prompts: {answers[0][:120]!r}"
    with_oracle = [a for a, o in zip(answers, oracle) if o]
    if len(with_oracle) >= 2 and all(NOT_COVERED.lower() in a.lower() for a in with_oracle):
        return (
            f"the adapter abstains on all {len(with_oracle)} validation prompts whose documents hold the answer "
            f"(false abstention 1.00)"
        )
    return None


def reply_scores(replies: list[str], rows: list[dict]) -> dict[str, float]:
    """Validation replies against their RAFT targets: parsed, same abstain-or-answer call, same citations."""
    from ragtune.llm.prompting import NOT_COVERED, parse_answer

    def decision(parsed: dict | None) -> tuple[bool, frozenset] | None:
        return None if parsed is None else (NOT_COVERED.lower() in parsed["answer"].lower(), frozenset(parsed["citations"]))

    pairs = [(decision(parse_answer(reply)), decision(parse_answer(row.get("target", "")))) for reply, row in zip(replies, rows)]
    n = max(len(pairs), 1)
    scores = {
        "val_format_validity": sum(got is not None for got, _ in pairs) / n,
        "val_abstain_share": sum(got is not None and got[0] for got, _ in pairs) / n,
        "val_distinct_replies": len(set(replies)) / n,
    }
    targeted = [(got, want) for got, want in pairs if want is not None]
    if targeted:
        scores["val_abstain_agreement"] = sum(got is not None and got[0] == want[0] for got, want in targeted) / len(targeted)
        scores["val_citation_match"] = sum(got is not None and got[1] == want[1] for got, want in targeted) / len(targeted)
    return scores


class GenerationCheck(TrainerCallback):
    """Greedy replies to a few validation prompts every `every` steps and at the end; collapse fails the run.

    A falling loss does not show that an adapter answers: a recipe can drive the loss down by
    replying the same string to everything. Replies are scored against their targets (`val_*`
    metrics in MLflow, by step: a learning curve of behaviour, not only loss), and the final
    replies are checked for collapse (`answers_collapsed`).
    """

    def __init__(self, tokenizer, rows: list[dict], every: int = 0, max_new_tokens: int = 128):
        self.tokenizer, self.rows, self.every, self.max_new_tokens = tokenizer, rows, every, max_new_tokens
        self.replies: list[str] = []
        self.curve: list[dict] = []  # {"step", val_* ...} per check
        self.problem: str | None = None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every and state.global_step % self.every == 0 and state.global_step < state.max_steps:
            self.check(model, state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.check(model, state.global_step)
        if self.replies:
            self.problem = answers_collapsed(self.replies, [bool(r.get("oracle_kept", True)) for r in self.rows])

    def check(self, model, step: int) -> None:
        import mlflow
        import torch

        if not self.rows or model is None:
            return
        side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        inputs = self.tokenizer([r["prompt"] for r in self.rows], return_tensors="pt", padding=True, add_special_tokens=False)
        self.tokenizer.padding_side = side
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            output = model.generate(
                **inputs.to(model.device),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        model.train(was_training)
        self.replies = self.tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        scores = reply_scores(self.replies, self.rows)
        self.curve.append({"step": step, **scores})
        mlflow.log_metrics(scores, step=step)
        mlflow.log_text("\n".join(self.replies), f"validation_replies/step-{step:05d}.txt")


def check_rows(path: str, n: int, seed: int, fallback: str = "") -> list[dict]:
    """Up to n validation rows (a fixed random draw; the training file when there is no validation split)."""
    import random

    from ragtune.jsonl import read_jsonl

    rows = read_jsonl(Path(path)) if path and Path(path).is_file() else []
    if not rows and fallback and Path(fallback).is_file():  # no validation split: the training prompts still show collapse
        rows = read_jsonl(Path(fallback))
    random.Random(seed).shuffle(rows)
    return rows[:n]


def training_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def training_arguments(config: SftConfig):
    from trl import SFTConfig

    device = training_device()
    bf16 = resolve_dtype(config.dtype, device) == "bfloat16"  # autocast: float32 master weights, bf16 matrix products
    return SFTConfig(
        use_cpu=device == "cpu",  # else transformers refuses bf16 without a GPU
        output_dir=config.output_dir,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_steps,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        gradient_checkpointing=config.gradient_checkpointing,  # TRL defaults it on: ~1/3 more compute per step
        max_length=config.max_length,
        padding_free=config.padding_free,
        packing=config.packing,
        completion_only_loss=True,
        train_sampling_strategy="group_by_length"  # "stratified" is LoraSFTTrainer's own sampler
        if config.batch_order == "length" and config.per_device_train_batch_size > 1
        else "random",
        include_num_input_tokens_seen="non_padding",
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
        bf16=bf16,
        dataloader_num_workers=0,
        dataset_num_proc=None,
        disable_tqdm=False,
    )


def train(config: SftConfig, keep_model: bool = False) -> dict:
    """Train, log and (optionally) register; returns a summary (run id, version, metrics).

    keep_model=True adds the trained PeftModel under "model" (tests inspect its weights).
    """
    import mlflow
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ragtune.llm.base_model import base_model_label, resolve_base_model
    from ragtune.registry import ensure_experiment, register_model

    config = config.resolved()
    if not config.train_file or not Path(config.train_file).is_file():
        raise FileNotFoundError(f"training file not found: {config.train_file!r}")
    base = resolve_base_model(config.base_model, Path(config.models_dir))
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    train_set = load_split(config.train_file)
    has_validation = (
        bool(config.validation_file)
        and Path(config.validation_file).is_file()
        and Path(config.validation_file).stat().st_size > 0
    )
    eval_set = load_split(config.validation_file) if has_validation else None
    lora = config.lora_config()

    experiment_id = ensure_experiment(
        config.tracking_uri, config.experiment, Path(config.artifact_location) if config.artifact_location else None
    )
    with mlflow.start_run(experiment_id=experiment_id, run_name=config.run_name or None, tags=config.run_tags) as run:
        mlflow.log_params(
            {
                k: (json.dumps(v) if isinstance(v, (list, dict)) else v)
                for k, v in asdict(config).items()
                if k not in ("version_tags", "run_tags")
            }
        )
        mlflow.log_params(
            {
                "base_model_resolved": base_model_label(config.base_model),
                "train_examples": len(train_set),
                "dtype_resolved": resolve_dtype(config.dtype, training_device()),
                "validation_examples": len(eval_set) if eval_set is not None else 0,
            }
        )
        step_metrics, budget = StepMetrics(), TimeBudget(config.max_minutes)
        check = GenerationCheck(
            tokenizer,
            check_rows(config.validation_file, config.generation_check_prompts, config.seed, fallback=config.train_file),
            every=config.generation_check_every,
        )
        trainer = LoraSFTTrainer(
            model=model,
            args=training_arguments(config),
            train_dataset=train_set,
            eval_dataset=eval_set,
            processing_class=tokenizer,
            peft_config=lora,
            callbacks=[step_metrics, budget, check],
        )
        trainer.lead_tokens, trainer.lead_weight = config.lead_tokens, config.lead_weight
        trainer.batch_order = config.batch_order
        sampler = trainer._get_train_sampler()
        if isinstance(sampler, StratifiedSampler):  # how long training sees only "not covered" (first epoch)
            mlflow.log_param("longest_abstention_run", sampler.longest_abstention_run())
        started = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - started
        metrics = {
            "train_loss": float(result.training_loss),
            "train_seconds": seconds,
            "train_tokens": float(trainer.state.num_input_tokens_seen),
            "tokens_per_second": step_metrics.steady_rate() or trainer.state.num_input_tokens_seen / max(seconds, 1e-9),
            "steps": float(trainer.state.global_step),
            "stopped_by_time_budget": float(budget.stopped_early),
        }
        summary_extra = {"dtype": resolve_dtype(config.dtype, training_device()), "learning_curve": check.curve}
        if eval_set is not None and config.eval_at_end:
            metrics["eval_loss"] = float(trainer.evaluate()["eval_loss"])
        if not all(math.isfinite(v) for v in metrics.values()):
            raise FloatingPointError(f"training produced a non-finite metric: {metrics}")
        if check.problem:
            mlflow.set_tag("collapsed", check.problem)
            raise CollapseError(
                f"training collapsed, not registering it: {check.problem}. Try a lower learning_rate, "
                "more steps, or more curated interactions with cited documents"
            )
        mlflow.log_metrics({f"final_{k}": v for k, v in metrics.items()})

        adapter_dir = Path(config.output_dir) / "adapter"
        trainer.model.save_pretrained(adapter_dir)  # a PeftModel saves the LoRA weights only
        mlflow.log_artifacts(str(adapter_dir), artifact_path="adapter")
        version = None
        if config.registered_model:
            tags = {
                "base_model": base_model_label(config.base_model),
                **config.version_tags,
                "train_loss": f"{metrics['train_loss']:.4f}",
            }
            version = register_model(config.tracking_uri, config.registered_model, run.info.run_id, "adapter", tags)
    summary = {
        "run_id": run.info.run_id,
        "model_version": version,
        "adapter_dir": str(adapter_dir),
        "adapter_uri": f"runs:/{run.info.run_id}/adapter",
        "metrics": metrics,
        **summary_extra,
    }
    return {**summary, "model": trainer.model} if keep_model else summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.sft", description="Train a LoRA adapter with TRL on a RAFT dataset."
    )
    parser.add_argument("--config", required=True, help="YAML file of SftConfig fields (see training/configs/default.yaml)")
    parser.add_argument("--train-file", help="overrides train_file")
    parser.add_argument("--validation-file", help="overrides validation_file")
    parser.add_argument("--output-dir", help="overrides output_dir")
    parser.add_argument("--max-steps", type=int, help="overrides max_steps")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    overrides = {
        "train_file": args.train_file,
        "validation_file": args.validation_file,
        "output_dir": args.output_dir,
        "max_steps": args.max_steps,
    }
    from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes

    if DAGSTER_PIPES_CONTEXT_ENV_VAR not in os.environ:  # standalone: the summary is the only line on stdout
        config = SftConfig.from_yaml(args.config, **overrides)
        with contextlib.redirect_stdout(sys.stderr):
            summary = train(config)
        print(json.dumps(summary))
        return 0
    with open_dagster_pipes() as pipes:  # launched by the lora_adapter asset; an error here is reported to Dagster
        config = SftConfig.from_yaml(args.config, **overrides)
        pipes.log.info(f"training {config.base_model or 'the bundled base model'} on {config.train_file}")
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs; keep the caller's stdout clean
            summary = train(config)
        pipes.report_asset_materialization(
            metadata={
                "summary": {"raw_value": summary, "type": "json"},
                "mlflow_run_id": summary["run_id"],
                "model_version": summary["model_version"] or "",
                **{k: {"raw_value": v, "type": "float"} for k, v in summary["metrics"].items()},
            }
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
