"""LoRA smoke test on the real default base model: a few TRL steps, logged and registered in MLflow."""

import json
import math

import pytest

from ragtune.llm.prompting import answer_json, render_example
from training.config import SftConfig

pytestmark = pytest.mark.integration


def tiny_dataset(tokenizer, path, n: int) -> str:
    with open(path, "w") as f:
        for i in range(n):
            doc = {
                "doc_id": f"org/model-{i}",
                "title": f"model {i}",
                "text": f"org/model-{i} classifies short texts into {i + 2} labels.",
            }
            row = render_example(
                tokenizer,
                f"Which model sorts texts into {i + 2} labels?",
                [doc],
                answer_json(f"Use org/model-{i}.", [doc["doc_id"]]),
            )
            f.write(json.dumps(row) + "\n")
    return str(path)


def test_lora_trains_logs_registers_and_loads_back(base_model, tokenizer, tmp_path):
    import mlflow
    import torch
    from mlflow import MlflowClient
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from training.sft import train

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = SftConfig(
        train_file=tiny_dataset(tokenizer, tmp_path / "train.jsonl", 6),
        validation_file=tiny_dataset(tokenizer, tmp_path / "validation.jsonl", 2),
        output_dir=str(tmp_path / "run"),
        base_model=base_model,
        lora_r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj"],
        learning_rate=1e-3,
        max_steps=3,
        per_device_train_batch_size=2,
        max_length=256,
        tracking_uri=uri,
        artifact_location=str(tmp_path / "artifacts"),
        registered_model="smoke-adapter",
        version_tags={"dataset_hash": "tiny"},
    )
    summary = train(config, keep_model=True)
    model = summary.pop("model")

    # adapter weights moved away from their zero initialisation; base weights did not move
    lora_b = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert lora_b and all(p.detach().abs().sum() > 0 for p in lora_b.values())
    base = AutoModelForCausalLM.from_pretrained(base_model).state_dict()
    frozen = [(n, p) for n, p in model.named_parameters() if "lora_" not in n]
    assert frozen and not any(p.requires_grad for _, p in frozen)
    for name, param in frozen:
        key = name.removeprefix("base_model.model.").replace(".base_layer", "")
        assert torch.equal(param.detach().cpu(), base[key]), name

    # loss finite and logged per step, with throughput
    client = MlflowClient(tracking_uri=uri)
    losses = [m.value for m in client.get_metric_history(summary["run_id"], "loss")]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert len(client.get_metric_history(summary["run_id"], "tokens_per_second")) == 3
    assert client.get_metric_history(summary["run_id"], "val_distinct_replies")  # replies checked, not only loss
    assert math.isfinite(summary["metrics"]["eval_loss"]) and summary["metrics"]["train_tokens"] > 0
    params = client.get_run(summary["run_id"]).data.params
    assert params["batch_order"] == "stratified" and params["longest_abstention_run"] == "0"  # no "not covered" rows

    # only the adapter is saved
    with safe_open(f"{summary['adapter_dir']}/adapter_model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert keys and all("lora_" in k for k in keys)

    # registered with its tags; loads back from the registry and generates
    version = client.get_model_version("smoke-adapter", summary["model_version"])
    assert version.tags["dataset_hash"] == "tiny" and version.tags["base_model"] == base_model
    mlflow.set_tracking_uri(uri)
    path = mlflow.artifacts.download_artifacts(f"models:/smoke-adapter/{summary['model_version']}", dst_path=str(tmp_path / "dl"))
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model), path).eval()
    name, trained = next(iter(lora_b.items()))
    assert torch.equal(dict(loaded.named_parameters())[name].detach(), trained.detach().cpu())
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Which model sorts texts into 3 labels?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = loaded.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]


def test_time_budget_stops_before_the_next_step_would_overrun():
    from types import SimpleNamespace

    from training.sft import TimeBudget

    ticks = iter([0.0, 20.0, 50.0, 80.0])  # train begins, then steps of 20 s, 30 s, 30 s
    budget = TimeBudget(minutes=1.5, clock=lambda: next(ticks))
    state, control = SimpleNamespace(global_step=0, max_steps=10), SimpleNamespace(should_training_stop=False)
    budget.on_train_begin(None, state, control)
    stops = []
    for step in (1, 2, 3):
        state.global_step = step
        budget.on_step_end(None, state, control)
        stops.append(control.should_training_stop)
    # after 50 s the next 30 s step still fits in 90 s; after 80 s it would not
    assert stops == [False, False, True] and budget.stopped_early
    assert not TimeBudget(minutes=0).seconds  # 0 = no budget


@pytest.mark.parametrize(
    "replies, oracle, problem",
    [
        (['{"answer": "Use a.", "citations": []}'] * 4, [True] * 4, "one reply to all 4"),
        (
            ['{"answer": "Not covered: the documents do not answer this question.", "citations": []}', "x", "y"],
            [True, False, False],
            None,
        ),  # only one oracle prompt: too few to call it
        (
            ['{"answer": "Not covered: the documents do not answer this question.", "citations": []}'] * 2 + ["Use b.", "Use c."],
            [True, True, False, False],
            "abstains on all 2",
        ),
        (["Use a.", "Use b.", "Use a.", "Use c."], [True] * 4, None),
    ],
)
def test_collapse_is_named(replies, oracle, problem):
    from training.sft import answers_collapsed

    found = answers_collapsed(replies, oracle)
    assert (found is None) if problem is None else (problem in found)


def test_completion_loss_equals_the_models_own_loss(base_model):
    """The CPU loss (LM head on answer positions only) is the model's causal-LM loss on the same labels."""
    import torch
    from transformers import AutoModelForCausalLM

    from training.sft import completion_loss

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32).eval()
    ids = torch.randint(100, 40000, (2, 40))
    mask = torch.ones_like(ids)
    mask[1, 34:] = 0  # right padding, as TRL pads
    labels = ids.clone()
    labels[0, :25], labels[1, :30], labels[1, 34:] = -100, -100, -100  # answers start at different positions
    inputs = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    with torch.no_grad():
        reference = model(**inputs).loss
        ours = completion_loss(model, inputs)
        summed = completion_loss(model, inputs, num_items_in_batch=torch.tensor(30))
    assert torch.allclose(ours, reference, atol=1e-5), (ours, reference)
    assert torch.allclose(summed * 30, reference * int((labels[:, 1:] != -100).sum()), atol=1e-3)

    # the answer's first tokens (the answer-or-abstain decision) can weigh more: here the first 2 of each row, x3
    with torch.no_grad():
        logits = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits[:, :-1]
        per_token = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="none"
        ).view(2, -1)
        lead = per_token[0, 24:26].sum() + per_token[1, 29:31].sum()  # label positions 25-26 and 30-31, shifted by one
        weighted = completion_loss(model, inputs, lead_tokens=2, lead_weight=3.0)
    n = int((labels[:, 1:] != -100).sum())
    assert torch.allclose(weighted * n, reference * n + 2 * lead, atol=1e-3)


def test_validation_replies_are_scored_against_their_targets():
    from ragtune.llm.prompting import NOT_COVERED, answer_json
    from training.sft import reply_scores

    rows = [
        {"target": answer_json("Use a.", ["d1"])},
        {"target": answer_json(NOT_COVERED, [])},
        {"target": answer_json("Use b.", ["d2"])},
    ]
    replies = [answer_json("Use x.", ["d1"]), answer_json(NOT_COVERED, []), "Use b, it is good."]
    scores = reply_scores(replies, rows)
    assert scores["val_format_validity"] == 2 / 3 and scores["val_citation_match"] == 2 / 3
    assert scores["val_abstain_agreement"] == 2 / 3 and scores["val_abstain_share"] == 1 / 3
    assert scores["val_distinct_replies"] == 1.0
    assert "val_citation_match" not in reply_scores(replies, [{}, {}, {}])  # rows without a target: format only
