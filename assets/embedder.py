"""Asset `embedder_release` (group behaviour): fine-tune the embedder on curated interactions, gate it, swap it in.

Runs before the RAFT dataset, so RAFT mines its hard negatives with the retriever that will serve.
The held-out evaluation items are never trained on, as for the adapter. Logic lives in
training/embedder.py (pairs, training, registration) and evaluation/embedder_release.py (green
table, gate, switch); this module only wires them to Dagster.
"""

import dagster as dg
from pydantic import Field

from assets.knowledge import chunk_index
from assets.resources import InteractionLogResource, LanceDBResource
from evaluation.embedder_gate import EmbedderGatePolicy
from evaluation.embedder_release import judge_and_release
from evaluation.eval_set import training_records
from ragtune.knowledge.live_index import open_live, read_live
from ragtune.knowledge.retriever import Retriever
from ragtune.registry import code_version
from training.dataset_builder import chunks_by_doc
from training.embedder import EmbedderTrainingConfig, embedder_pairs, train_and_register

GROUP = "behaviour"
DEFAULT_TRAINING = EmbedderTrainingConfig()
DEFAULT_GATE = EmbedderGatePolicy()


class EmbedderReleaseConfig(dg.Config):
    enabled: bool | None = Field(None, description="Fine-tune the embedder this run; None = RAGTUNE_EMBEDDER_TRAINING.")
    max_minutes: float | None = Field(None, description="Training budget in minutes; None = RAGTUNE_EMBEDDER_TRAIN_MINUTES.")
    epochs: float = Field(DEFAULT_TRAINING.epochs, description="Passes over the training pairs (the budget may stop it first).")
    batch_size: int = Field(DEFAULT_TRAINING.batch_size, description="Pairs per batch; the others in a batch are negatives.")
    learning_rate: float = Field(DEFAULT_TRAINING.learning_rate)
    min_items: int = Field(DEFAULT_GATE.min_items, description="Held-out items the gate needs to decide.")
    min_improvement: float = Field(DEFAULT_GATE.min_improvement, description="Recall@5 gain its 95% lower bound must clear.")


@dg.asset(
    group_name=GROUP,
    deps=[chunk_index],
    description="The embedder fine-tuned on curated questions and their gold chunks (hard negatives from the live "
    "retriever), registered in MLflow, gated on held-out recall@5 and, when it wins, swapped in blue/green.",
)
def embedder_release(
    context: dg.AssetExecutionContext,
    curated_interactions: list[dict],
    evaluation_set: dict,
    config: EmbedderReleaseConfig,
    lancedb: LanceDBResource,
    interaction_log: InteractionLogResource,
) -> dg.Output[dict]:
    s = lancedb.settings()
    live = read_live(s)
    if not (s.embedder_training if config.enabled is None else config.enabled):
        return dg.Output({"trained": False, "reason": "embedder training is off"}, metadata={"live_table": live.table})
    records = training_records(curated_interactions, evaluation_set["held_out_ids"], interaction_log.get().forgotten())
    _, store, embedder = open_live(s)
    retriever = Retriever(store, embedder, s.rrf_k)
    training = EmbedderTrainingConfig(
        epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        max_minutes=s.embedder_train_minutes if config.max_minutes is None else config.max_minutes,
    )
    pairs = embedder_pairs(
        records,
        lambda question, n: [h.as_dict() for h in retriever.search(question, k=n)],
        chunks_by_doc(store, public_only=True),
        training.candidates,
    )
    if len(pairs) < 2 * training.batch_size:
        reason = (
            f"{len(pairs)} training pairs (curated questions with gold chunks), fewer than two batches of {training.batch_size}"
        )
        context.log.info(f"embedder not trained: {reason}")
        return dg.Output({"trained": False, "reason": reason}, metadata={"live_table": live.table, "pairs": len(pairs)})
    tags = {"code_version": code_version(), "dagster_run_id": context.run_id, "index_version": str(store.version())}
    context.log.info(f"fine-tuning the embedder on {len(pairs)} pairs (at most {training.max_minutes} min)")
    # always from the configured embedder, never the live fine-tuned one: each version's training data is
    # then exactly its own pairs, so erasing a user flags every version that learned from them
    trained = train_and_register(s, pairs, training, s.embedder_path(), tags)
    policy = EmbedderGatePolicy(min_items=config.min_items, min_improvement=config.min_improvement)
    outcome = judge_and_release(
        s, trained["version"], trained["path"], evaluation_set["items"], policy, trained["run_id"], context.log.info
    )
    verdict = outcome["verdict"]
    primary = outcome["comparison"]["metrics"].get(policy.primary_metric, {})
    return dg.Output(
        {"trained": True, **outcome, "training": trained["metrics"]},
        metadata={
            "embedder_version": trained["version"],
            "verdict": verdict["outcome"],
            "switched": outcome["switched"],
            "live_table": read_live(s).table,
            "pairs": len(pairs),
            "train_seconds": trained["metrics"]["seconds"],
            f"{policy.primary_metric} live": primary.get("incumbent", 0.0),
            f"{policy.primary_metric} challenger": primary.get("challenger", 0.0),
            "interval": dg.MetadataValue.json(verdict["interval"]),
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in verdict["reasons"])),
            "mlflow_run_id": trained["run_id"],
        },
    )
