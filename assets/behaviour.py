"""Group `behaviour`: curated interactions + the live index -> evaluation set (held out) and RAFT dataset -> LoRA adapter, and their checks."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from assets.checks import check_result
from assets.embedder import embedder_release
from assets.knowledge import chunk_index
from assets.launchers import launch_training
from assets.resources import EmbedderResource, InteractionLogResource, LanceDBResource, MLflowResource
from evaluation.eval_set import build_evaluation_set, indexed_doc_ids, too_few_message, training_records
from evaluation.gate import DEFAULT_GATE, GatePolicy
from ragtune.jsonl import read_jsonl
from ragtune.knowledge.live_index import live_store
from ragtune.knowledge.relevance import RelevanceFloor
from ragtune.knowledge.retriever import Retriever
from ragtune.quality import raft_frame, validate_no_pii, validate_raft
from ragtune.registry import EXPERIMENT, code_version
from ragtune.settings import REPO_ROOT
from training.config import SftConfig
from training.raft import RaftConfig

GROUP = "behaviour"
DEFAULT_RAFT = RaftConfig()
DEFAULT_TRAINING = REPO_ROOT / "training" / "configs" / "default.yaml"


class RaftDatasetConfig(dg.Config):
    distractors: int = Field(
        DEFAULT_RAFT.distractors, description="Hard negatives per example: the retriever's best non-gold chunks."
    )
    random_distractors: int = Field(
        DEFAULT_RAFT.random_distractors, description="Extra distractors drawn at random from the index."
    )
    oracle_probability: float = Field(
        DEFAULT_RAFT.oracle_probability, description="P: share of examples whose context holds the gold chunk."
    )
    counterfactual_share: float = Field(
        DEFAULT_RAFT.counterfactual_share,
        description="Share of the oracle examples whose identifier is edited in the document and the answer "
        "(teaches following the document over the weights).",
    )
    neighbourhood: int = Field(
        DEFAULT_RAFT.neighbourhood,
        description="A 'not covered' example's documents are the nearest ranked beyond the question's top "
        "this-many documents: off-topic, not a near miss that may answer it.",
    )
    validation_fraction: float = Field(
        DEFAULT_RAFT.validation_fraction, description="Share of examples held out for validation loss."
    )
    seed: int = Field(DEFAULT_RAFT.seed, description="Seed of the sampler and the split.")
    order: str = Field(
        DEFAULT_RAFT.order,
        description="Documents in a context: shuffled, or retrieval (the retriever's "
        "order, as served; an unranked oracle at a random place).",
    )
    max_tokens: int = Field(
        DEFAULT_RAFT.max_tokens,
        description="Prompt + answer budget in base-model tokens (keep equal to the "
        "training max_length); the longest documents are cut to fit so no answer is truncated away.",
    )
    include_restricted: bool = Field(
        False, description="Also train on documents with an access list (off: weights cannot enforce ACLs)."
    )


class EvaluationSetConfig(dg.Config):
    eval_set: str = Field(
        "",
        description="Evaluation set (.jsonl, docs/design.md format); empty = RAGTUNE_EVAL_SET, and when "
        "that is empty too, a held-out share of the curated interactions (never trained on).",
    )
    holdout: float | None = Field(None, description="Share of curated interactions held out; None = RAGTUNE_EVAL_HOLDOUT.")
    per_document: int | None = Field(
        None, ge=0, description="Most items kept per gold document; None = RAGTUNE_EVAL_PER_DOCUMENT, 0 = no cap."
    )
    min_items: int | None = Field(
        None,
        description="Fewest answerable items to go on with training; None = the gate "
        "policy's min_items (training for a gate that cannot decide would be wasted).",
    )
    policy: str = Field(str(DEFAULT_GATE), description="Gate policy YAML whose min_items the evaluation set must reach.")


class LoraAdapterConfig(dg.Config):
    training_config: str = Field(
        str(DEFAULT_TRAINING), description="YAML of training hyper-parameters (training/config.py:SftConfig)."
    )
    max_steps: int | None = Field(None, description="Override the YAML's max_steps (a short run).")
    max_minutes: float | None = Field(
        None, description="Override the YAML's wall-clock budget in minutes (training stops before a step would overrun it)."
    )


@dg.asset(
    group_name=GROUP,
    deps=[chunk_index],
    description="The questions a challenger is judged on: a held-out share "
    "of the curated interactions (or RAGTUNE_EVAL_SET), only those whose gold documents are in the live index.",
)
def evaluation_set(curated_interactions: list[dict], config: EvaluationSetConfig, lancedb: LanceDBResource) -> dg.Output[dict]:
    s = lancedb.settings()
    chosen = build_evaluation_set(
        curated_interactions,
        config.eval_set or s.eval_set,
        indexed_doc_ids(live_store(s)),
        config.holdout or s.eval_holdout,
        per_document=s.eval_per_document if config.per_document is None else config.per_document,
    )
    needed = config.min_items or GatePolicy.from_yaml(config.policy).min_items
    answerable = sum(i["answerable"] for i in chosen["items"])
    if answerable < needed:
        raise dg.Failure(
            description=too_few_message(
                answerable,
                needed,
                len(chosen["held_out_ids"]),
                len(chosen["skipped"]),
                bool(chosen["source"] != "held-out"),
                chosen["capped"],
                chosen["per_document"],
                chosen["documents"],
            ),
            metadata={"skipped": dg.MetadataValue.json(chosen["skipped"][:50]), "capped_per_document": chosen["capped"]},
        )
    return dg.Output(
        chosen,
        metadata={
            "source": chosen["source"],
            "items": len(chosen["items"]),
            "answerable": sum(i["answerable"] for i in chosen["items"]),
            "held_out_from_training": len(chosen["held_out_ids"]),
            "skipped": len(chosen["skipped"]),
            "capped_per_document": chosen["capped"],
            "gold_documents": chosen["documents"],
            "skipped_reasons": dg.MetadataValue.json(chosen["skipped"][:50]),
            "digest": chosen["digest"],
        },
    )


@dg.asset(
    group_name=GROUP,
    deps=[chunk_index, embedder_release],  # the hard negatives come from the retriever that will serve
    description="RAFT examples: oracle chunks plus the retriever's hard negatives, rendered with the chat template.",
)
def raft_dataset(
    curated_interactions: list[dict],
    evaluation_set: dict,
    config: RaftDatasetConfig,
    lancedb: LanceDBResource,
    embedder: EmbedderResource,
    interaction_log: InteractionLogResource,
) -> dg.Output[dict]:
    from transformers import AutoTokenizer

    from ragtune.llm.base_model import resolve_base_model
    from training.dataset_builder import build_dataset

    s = lancedb.settings()
    _, store, model = embedder.open_live()  # after embedder_release: the table and embedder that will serve
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(s.base_model, s.models_dir))
    raft = RaftConfig(**config.model_dump(exclude={"include_restricted"}))
    held_out = set(evaluation_set["held_out_ids"])
    records = training_records(curated_interactions, held_out, interaction_log.get().forgotten())
    built = build_dataset(
        records,
        store,
        Retriever(store, model, s.rrf_k),
        tokenizer,
        raft,
        s.datasets_dir,
        config.include_restricted,
        sorted(held_out),
        floor_quantile=s.relevance_floor_quantile,
        context_k=s.serve_k,
    )
    value = {
        **built.as_dict(),
        "curated_records": len(records),
        "held_out": len(held_out),
        "distractors": raft.distractors,
        "oracle_probability": raft.oracle_probability,
    }
    return dg.Output(
        value,
        metadata={
            "dataset_hash": built.digest,
            "train": built.train,
            "validation": built.validation,
            "oracle_share": built.oracle_share,
            "counterfactual_examples": built.counterfactual,
            "relevance_floor": built.relevance_floor.value if built.relevance_floor else "none",
            "oracle_probability": raft.oracle_probability,
            "distractors": raft.distractors,
            "index_version": built.index_version,
            "skipped": dg.MetadataValue.json(built.skipped),
            "folder": str(built.folder),
            "trimmed_to_budget": built.trimmed,
            "held_out_for_evaluation": len(held_out),
        },
    )


@dg.asset(
    group_name=GROUP,
    description="A LoRA adapter trained by `python -m training.sft` through Dagster Pipes, registered in MLflow.",
)
def lora_adapter(
    context: dg.AssetExecutionContext,
    raft_dataset: dict,
    config: LoraAdapterConfig,
    mlflow: MLflowResource,
    training_pipes: dg.ResourceParam[dg.PipesClient],
) -> dg.Output[dict]:
    s = mlflow.settings()
    run_dir = s.home_dir / "runs" / context.run_id
    sft = SftConfig.from_yaml(config.training_config, max_steps=config.max_steps, max_minutes=config.max_minutes)
    sft.train_file = f"{raft_dataset['folder']}/train.jsonl"
    sft.validation_file = f"{raft_dataset['folder']}/validation.jsonl"
    sft.output_dir, sft.base_model, sft.models_dir, sft.dtype = str(run_dir), s.base_model, str(s.models_dir), s.dtype
    sft.experiment, sft.tracking_uri = EXPERIMENT, mlflow.uri()
    sft.artifact_location = str(s.artifact_root(sft.tracking_uri) or "")
    sft.registered_model, sft.run_name = mlflow.model_name(), f"lora-{raft_dataset['digest']}"
    sft.version_tags = {
        "dataset_hash": raft_dataset["digest"],
        "index_version": str(raft_dataset["index_version"]),
        "curated_records": str(raft_dataset["curated_records"]),
        "code_version": code_version(),
        "dagster_run_id": context.run_id,
        **(RelevanceFloor(**raft_dataset["relevance_floor"]).tags() if raft_dataset.get("relevance_floor") else {}),
    }
    sft.run_tags = {"dagster_run_id": context.run_id, "dataset_hash": raft_dataset["digest"]}
    config_path = sft.to_yaml(run_dir / "sft.yaml")
    invocation = launch_training(
        training_pipes,
        context,
        ["-m", "training.sft", "--config", str(config_path)],
        {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
        s,
    )
    reported = {}
    for result in invocation.get_results():
        reported.update({k: v.value for k, v in (result.metadata or {}).items()})
    summary = reported.get("summary")
    if not summary:
        raise RuntimeError("training finished without reporting a summary through Dagster Pipes")
    value = {**summary, "dataset_hash": raft_dataset["digest"], "index_version": raft_dataset["index_version"]}
    return dg.Output(
        value,
        metadata={
            "mlflow_run_id": summary["run_id"],
            "model_version": summary["model_version"] or "",
            "registered_model": mlflow.model_name(),
            "dataset_hash": raft_dataset["digest"],
            **{k: float(v) for k, v in summary["metrics"].items()},
            "training_config": str(config_path),
        },
    )


@dg.asset_check(
    asset=raft_dataset,
    blocking=True,
    description="Great Expectations: examples exist, targets are valid answer JSON, gold never a distractor.",
)
def raft_dataset_is_valid(raft_dataset: dict) -> dg.AssetCheckResult:
    rows = [r for split in ("train", "validation") for r in read_jsonl_split(raft_dataset, split)]
    return check_result(validate_raft(raft_frame(rows)))


@dg.asset_check(
    asset=raft_dataset,
    blocking=True,
    description="Great Expectations: no PII pattern in the questions and answers the model will be trained on.",
)
def raft_dataset_has_no_pii(raft_dataset: dict) -> dg.AssetCheckResult:
    rows = [r for split in ("train", "validation") for r in read_jsonl_split(raft_dataset, split)]
    return check_result(validate_no_pii(raft_frame(rows), ["question", "answer"]))


def read_jsonl_split(raft_dataset: dict, split: str) -> list[dict]:
    return read_jsonl(Path(raft_dataset["folder"]) / f"{split}.jsonl")


BEHAVIOUR_ASSETS = [evaluation_set, embedder_release, raft_dataset, lora_adapter]
BEHAVIOUR_CHECKS = [raft_dataset_is_valid, raft_dataset_has_no_pii]
