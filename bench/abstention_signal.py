"""Can an adapter tell when to abstain? The first-token probability of the abstention reply, as a detector.

On a data home where `adapter_retrain` ran (make run's, or bench/quality.py --keep), the held-out
evaluation set is rebuilt as the job built it, its probes are retrieved from the live index, and for
each probe the model reads the prompt plus the opening `{"answer": "` of the reply JSON. The score is
log P(first token of the abstention reply). A probe should abstain when its context is off-topic
(unanswerable probes); answer probes with a gold document served and counterfactual probes should not.
Answer probes whose retrieval missed the gold document have no right call (decision 36) and are left out. The AUC of the score against that label says whether any threshold could teach the decision:
0.5 is chance. Baselines in the same run: the base model on the same prompts, and a detector that reads
no model at all, the context's relevance (ragtune.knowledge.relevance: the best cosine similarity between
the question and a served chunk; low: abstain).
For that one also a rule with no probe in its making: the relevance floor the version was trained with
(its `relevance_floor_*` tags: the 0.05 quantile of the relevance the training questions get), or for a
version from before floors one measured here the same way on the curated questions not held out;
reported as how often it abstains where it should and where it should not.

    python bench/abstention_signal.py --home .ragtune [--version latest] [--holdout 0.4] [--items 71] [--probe-items 20]
"""

import argparse
import os
from pathlib import Path

from common import timer, write_result


def auc(positives: list[float], negatives: list[float]) -> float | None:
    """P(a random positive scores above a random negative), ties counted half (Mann-Whitney)."""
    if not positives or not negatives:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return round(wins / (len(positives) * len(negatives)), 4)


def scores(model, tokenizer, probes) -> list[dict]:
    import torch

    from ragtune.llm.prompting import NOT_COVERED, build_messages

    opening = '{"answer": "'
    before = tokenizer.encode(opening, add_special_tokens=False)
    full = tokenizer.encode(opening + NOT_COVERED, add_special_tokens=False)
    if full[: len(before)] != before:
        raise SystemExit("the opening and the abstention reply do not share their tokens; cannot score the first token")
    first = full[len(before)]
    rows = []
    for probe in probes:
        prompt = (
            tokenizer.apply_chat_template(
                build_messages(probe.question, probe.documents), add_generation_prompt=True, tokenize=False
            )
            + opening
        )
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            logits = model(**inputs, logits_to_keep=1).logits[0, -1].float()
        gold_in = any(d["doc_id"] in probe.gold_doc_ids for d in probe.documents)
        if probe.kind == "answer" and not gold_in:
            continue  # a near miss: the documents served may answer it
        rows.append(
            {
                "kind": probe.kind,
                "should_abstain": probe.kind == "unanswerable",
                "score": float(torch.log_softmax(logits, -1)[first]),
                "greedy_abstains": int(logits.argmax()) == first,
            }
        )
    return rows


def similarity_rows(probes) -> list[dict]:
    """The context's relevance to the question (ragtune.knowledge.relevance) as a score (negated: low means abstain)."""
    rows = []
    for probe in probes:
        gold_in = any(d["doc_id"] in probe.gold_doc_ids for d in probe.documents)
        if (probe.kind == "answer" and not gold_in) or probe.relevance is None:  # a near miss, or no context at all
            continue
        rows.append(
            {
                "kind": probe.kind,
                "should_abstain": probe.kind == "unanswerable",
                "score": -probe.relevance,
                "greedy_abstains": False,
            }
        )
    return rows


def summary(rows: list[dict]) -> dict:
    positives = [r["score"] for r in rows if r["should_abstain"]]
    negatives = [r["score"] for r in rows if not r["should_abstain"]]
    return {
        "auc": auc(positives, negatives),
        "should_abstain": len(positives),
        "should_answer": len(negatives),
        "greedy_abstains_when_it_should": sum(r["greedy_abstains"] for r in rows if r["should_abstain"]),
        "greedy_abstains_when_it_should_not": sum(r["greedy_abstains"] for r in rows if not r["should_abstain"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True, help="data home where adapter_retrain ran")
    parser.add_argument("--version", default="latest", help="registry version, alias, or latest (the newest version)")
    parser.add_argument("--holdout", type=float, default=None, help="held-out share the job used (default: the setting)")
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--probe-items", type=int, default=20)
    parser.add_argument("--name", default="abstention_signal")
    args = parser.parse_args()
    os.environ["RAGTUNE_HOME"] = str(Path(args.home).resolve())

    from transformers import AutoTokenizer

    from evaluation.eval_set import build_evaluation_set, indexed_doc_ids
    from evaluation.harness import HarnessConfig, build_probes
    from ragtune import registry
    from ragtune.jsonl import read_jsonl
    from ragtune.knowledge.live_index import open_live
    from ragtune.knowledge.relevance import RelevanceFloor, calibrate, relevance
    from ragtune.knowledge.retriever import Retriever
    from ragtune.llm.base_model import resolve_base_model
    from ragtune.llm.generator import load_model
    from ragtune.settings import load_settings

    settings = load_settings()
    _, store, embedder = open_live(settings)
    holdout = settings.eval_holdout if args.holdout is None else args.holdout
    chosen = build_evaluation_set(
        read_jsonl(settings.home / "datasets" / "curated.jsonl"), settings.eval_set, indexed_doc_ids(store), holdout
    )
    items = chosen["items"]
    retriever = Retriever(store, embedder, settings.rrf_k)
    probes, _ = build_probes(
        items,
        lambda q, n: [h.as_dict() for h in retriever.search(q, k=n)],
        HarnessConfig(limit=args.items, probe_limit=args.probe_items),
        lambda q, chunks: relevance(embedder, q, chunks),
    )
    if args.version == "latest":
        versions = registry.list_versions(settings.tracking_uri, settings.registered_model)
        version = versions[0]["version"] if versions else None
    else:
        version = registry.resolve(settings.tracking_uri, settings.registered_model, args.version)
    if version is None:
        raise SystemExit(f"no adapter behind {args.version!r} in {args.home}")
    adapter = str(registry.download_adapter(settings.tracking_uri, settings.registered_model, version, settings.adapters_dir))
    base = str(resolve_base_model(settings.base_model, settings.models_dir))
    tokenizer = AutoTokenizer.from_pretrained(base)
    result = {"home": args.home, "version": version, "probes": len(probes)}

    rows = similarity_rows(probes)
    result["retrieval_similarity"] = {k: v for k, v in summary(rows).items() if not k.startswith("greedy")}
    # the floor this version was trained with (its tags); for a version from before floors, one measured here
    calibrated = RelevanceFloor.from_tags(registry.version_tags(settings.tracking_uri, settings.registered_model, version))
    if calibrated is None:
        curated = read_jsonl(settings.home / "datasets" / "curated.jsonl")
        held_out = set(chosen["held_out_ids"])
        in_scope = [
            relevance(
                embedder, r["question"], [h.as_dict() for h in retriever.search(r["question"], k=settings.serve_k, groups=[])]
            )
            for r in curated
            if r["id"] not in held_out
        ]
        calibrated = calibrate(in_scope, 0.05, embedder.fingerprint)
    if calibrated is None:
        raise SystemExit("too few training questions to measure a relevance floor")
    floor = calibrated.value
    result["retrieval_similarity"].update(
        floor_from_training_questions=round(floor, 4),
        training_questions=calibrated.questions,
        floor_abstains_when_it_should=sum(-r["score"] < floor for r in rows if r["should_abstain"]),
        floor_abstains_when_it_should_not=sum(-r["score"] < floor for r in rows if not r["should_abstain"]),
    )
    for name, adapter_dir in (("base", None), ("adapter", adapter)):
        with timer() as t:
            rows = scores(load_model(base, adapter_dir, "float32"), tokenizer, probes)
        result[name] = {**summary(rows), "seconds": round(t.seconds, 1)}
    write_result(args.name, result)


if __name__ == "__main__":
    main()
