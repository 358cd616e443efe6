"""`ragtune demo`: the main job on the bundled APIBench subset.

Refresh the index from the demo documents, measure retrieval on the importer's held-out demo
questions, import the bundled interactions into the log, then run the adapter_retrain job:
curate, hold out 40% of the interactions' documents for evaluation (never trained on), build the
RAFT set from the live index, train a LoRA (training/configs/demo.yaml), register it in MLflow,
evaluate it against the base model on the held-out interactions, gate it (evaluation/gate-demo.yaml)
and release it; a released champion then answers one demo question with its citations.
"""

from __future__ import annotations

from pathlib import Path

from ragtune.jsonl import read_jsonl
from ragtune.settings import REPO_ROOT, Settings

DEMO_TRAINING = REPO_ROOT / "training" / "configs" / "demo.yaml"
DEMO_GATE = REPO_ROOT / "evaluation" / "gate-demo.yaml"
# 40% of the bundled interactions' documents are held out: 71 of the 139 interactions, never trained on.
# One document alone has 22 of them, and questions about one document are not independent evidence, so
# the evaluation set keeps at most 3 per document (RAGTUNE_EVAL_PER_DOCUMENT): 51 items over 34
# documents, all answered (no limit). The primary metric counts only the items whose gold identifier the
# context tells apart, 25 of the 51 in the last run re-judged so, against the demo gate's 20. 26 are also
# probed for abstention and adherence, one per document: with 20 probed, 11 had an identifier to edit,
# one under the gate's 12.
DEMO_HOLDOUT, DEMO_MIN_ITEMS, DEMO_EVAL_LIMIT, DEMO_PROBE_LIMIT = 0.4, 30, None, 26


def ask_champion(settings: Settings, question: str) -> dict:
    """One demo question answered by the new champion, as `ragtune ask` would (and logged like it)."""
    from ragtune.serving.answerer import Answerer

    return Answerer.from_settings(settings).answer(question, user="demo").as_dict()


def run_demo(
    settings: Settings,
    demo_dir: Path,
    verbose: bool = False,
    train_steps: int | None = None,
    eval_limit: int | None = None,
    probe_limit: int | None = None,
    max_new_tokens: int | None = None,
    min_eval_items: int | None = None,
) -> dict:
    from evaluation.retrieval import depth_for, ranked_documents, retrieval_scores
    from ragtune.behaviour.interactions import InteractionLog
    from ragtune.cli.knowledge import refresh
    from ragtune.cli.release import retrain, retrain_run_config
    from ragtune.knowledge.retriever import LiveRetriever

    docs = demo_dir / "docs"
    interactions = read_jsonl(demo_dir / "interactions.jsonl")
    eval_items = read_jsonl(demo_dir / "eval.jsonl")
    outcome = refresh(settings, str(docs), allow_empty=False, verbose=verbose)
    if not outcome.success:
        return {"ok": False, "error": outcome.error, "run_id": outcome.run_id}

    def held_out_retrieval(retriever) -> dict:
        return retrieval_scores(
            [ranked_documents(retriever.search(item["question"], k=depth_for(5))) for item in eval_items],
            [item["gold_doc_ids"] for item in eval_items],
            ks=(1, 5),
        )

    before = held_out_retrieval(LiveRetriever(settings).current()[2])
    imported = InteractionLog(settings.interactions_db).import_jsonl(demo_dir / "interactions.jsonl")
    config = retrain_run_config(
        str(DEMO_TRAINING),
        train_steps,
        None,
        eval_limit or DEMO_EVAL_LIMIT,
        probe_limit if probe_limit is not None else DEMO_PROBE_LIMIT,
        gate=str(DEMO_GATE),
        max_new_tokens=max_new_tokens,
        distractors=2,
        holdout=DEMO_HOLDOUT,
        min_eval_items=min_eval_items or DEMO_MIN_ITEMS,
    )
    behaviour = retrain(settings, config, verbose)
    asked = ask_champion(settings, eval_items[0]["question"]) if behaviour.get("released") else None
    return {
        "asked": asked,
        "asked_question": eval_items[0]["question"],
        "ok": behaviour["ok"],
        "interactions_imported": imported.added,
        "retrain": behaviour,
        "data": {"documents": len(list(docs.glob("*.md"))), "interactions": len(interactions), "eval_items": len(eval_items)},
        "refresh": {"run_id": outcome.run_id, **outcome.outputs["chunk_index"]},
        "retrieval_before": before,  # with the embedder live before the retrain
        "retrieval": held_out_retrieval(LiveRetriever(settings).current()[2]),  # with the one live after it
        "dagster_home": str(settings.dagster_home),
    }
