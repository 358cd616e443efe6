"""Judge a recorded evaluation again under the current metrics and gate, without generating anything.

Every evaluated adapter version keeps its run's scored rows in MLflow (`evaluation/items.jsonl` on the
version's run): per probe the question, the served document ids, the reply and its citations. Greedy
replies do not change, so when a metric's definition changes, the recorded replies are scored again
(`evaluation.harness.answer_metrics`, the harness's own scoring) and the gate decides again on exactly
the same answers. Rows recorded before a field existed get it here:
- `reference` and `identifier`: from the evaluation set rebuilt as the job built it (the held-out
  share of `datasets/curated.jsonl`, by the setting's or `--holdout`'s share), keyed by item id;
- `identifier_shown` (the gold identifier is in a gold document of the context and not in every served
  one), recomputed on every row under the current definition: the context is retrieved again from the
  live index; a row whose retrieved ids differ from the recorded ones keeps its recorded value (or the
  old rule, gold document served, where it has none) and is counted under `contexts_changed`.

Rows of items the per-document cap (RAGTUNE_EVAL_PER_DOCUMENT, `--per-document`) leaves out are dropped and
counted under `rows_capped`: a run recorded before the cap is judged on the recorded items the cap keeps.
That is the overlap of what was recorded and what a run now would choose, not the same set when the
recorded run had an item limit (a run now takes up to N items of every held-out document; the recorded
one took the first items in log order). `recorded` keeps every recorded row's figures, `recorded_capped`
the same replies on the kept rows under the old definitions, `rejudged` the kept rows under the current ones.

Also reported: the "cite the top-ranked document" baseline, the citation accuracy a model would reach
by always citing the first served document (issue 13: the baseline an adapter must beat).

    python bench/rejudge.py --home .bench/quality-huggingface [--version latest] [--gate evaluation/gate.yaml]
"""

import argparse
import os
import tempfile
from pathlib import Path

from common import ROOT, adapter_version, write_result


def rank_one_baseline(rows: list[dict], candidate: str) -> dict:
    """Citation accuracy of citing the first served document, on `candidate`'s answer probes with gold served."""
    served = [
        r for r in rows if r["candidate"] == candidate and r["kind"] == "answer" and set(r["retrieved"]) & set(r["gold_doc_ids"])
    ]
    hits = sum(r["retrieved"][0] in r["gold_doc_ids"] for r in served)
    return {"cite_rank_one_gold_in_context": round(hits / len(served), 4) if served else None, "n": len(served)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True, help="a data home where adapter_retrain ran")
    parser.add_argument("--version", default="latest", help="the evaluated adapter: registry version, alias, or latest")
    parser.add_argument("--gate", default=str(ROOT / "evaluation" / "gate.yaml"))
    parser.add_argument("--holdout", type=float, default=None, help="held-out share the job used (default: the setting)")
    parser.add_argument(
        "--per-document",
        type=int,
        default=None,
        help="most items kept per gold document, as the evaluation set now keeps them (default: the "
        "setting; 0 = every recorded row)",
    )
    parser.add_argument("--k", type=int, default=3, help="documents the evaluation served (the harness's k)")
    parser.add_argument("--name", default=None, help="result file name (default rejudge-<home folder name>)")
    args = parser.parse_args()
    os.environ["RAGTUNE_HOME"] = str(Path(args.home).resolve())

    from evaluation.eval_set import build_evaluation_set, indexed_doc_ids
    from evaluation.gate import GatePolicy, compare, decide
    from evaluation.harness import answer_metrics, documents_of
    from evaluation.metrics import identifier_shown
    from evaluation.release import ITEMS
    from evaluation.retrieval import ranked_documents
    from ragtune import registry
    from ragtune.jsonl import read_jsonl
    from ragtune.knowledge.live_index import open_live
    from ragtune.knowledge.retriever import Retriever
    from ragtune.settings import load_settings

    settings = load_settings()
    wanted, run_id = adapter_version(settings, args.version)
    with tempfile.TemporaryDirectory() as tmp:
        path = registry.client(settings.tracking_uri).download_artifacts(run_id, ITEMS, tmp)
        rows = read_jsonl(path)
    _, store, embedder = open_live(settings)
    holdout = settings.eval_holdout if args.holdout is None else args.holdout
    per_document = settings.eval_per_document if args.per_document is None else args.per_document
    curated, indexed = read_jsonl(settings.home / "datasets" / "curated.jsonl"), indexed_doc_ids(store)
    items = {i["id"]: i for i in build_evaluation_set(curated, settings.eval_set, indexed, holdout)["items"]}
    kept = {
        i["id"] for i in build_evaluation_set(curated, settings.eval_set, indexed, holdout, per_document=per_document)["items"]
    }
    challenger = "challenger_rag"
    incumbent = "champion_rag" if any(r["candidate"] == "champion_rag" for r in rows) else "base_rag"
    recorded = compare(rows, challenger, incumbent)  # as recorded, on every row
    capped = sum(r["item_id"] in items and r["item_id"] not in kept for r in rows)
    rows = [r for r in rows if r["item_id"] not in items or r["item_id"] in kept]
    before = compare(rows, challenger, incumbent) if capped else recorded  # as recorded, on the rows the cap keeps
    if before.get("duplicates"):
        raise SystemExit(f"repeated item ids in the recorded rows ({before['duplicates']}): cannot pair them reliably")
    retriever = Retriever(store, embedder, rrf_k=settings.rrf_k)
    contexts: dict[str, list[dict]] = {}
    changed = missing = 0
    for row in rows:
        if row["kind"] != "answer":
            continue
        item = items.get(row["item_id"])
        if "reference" not in row:
            if item is None:
                missing += 1
                continue
            row["reference"], row["identifier"] = item["reference_answer"], item.get("identifier") or item["reference_answer"]
        retrieval = "citation_accuracy" in row
        if retrieval:  # always under the current definition
            if row["question"] not in contexts:
                contexts[row["question"]] = documents_of([h.as_dict() for h in retriever.search(row["question"], k=args.k)])
            served = contexts[row["question"]]
            if ranked_documents(served) == row["retrieved"]:
                row["identifier_shown"] = float(identifier_shown(row["identifier"], served, row["gold_doc_ids"]))
            else:
                changed += 1
        row.update(answer_metrics(row, retrieval))
    if missing:
        raise SystemExit(
            f"{missing} answer rows name items the rebuilt evaluation set lacks (is --holdout the share the "
            "job used?): scoring them the old way would mix definitions"
        )
    after = compare(rows, challenger, incumbent)
    verdict = decide(after, GatePolicy.from_yaml(args.gate))
    keys = ("identifier_match_gold_in_context", "citation_accuracy_gold_in_context", "identifier_match", "citation_accuracy")
    gate = Path(args.gate).resolve()
    write_result(
        args.name or f"rejudge-{Path(args.home).resolve().name}",
        {
            "home": str(args.home),
            "version": wanted,
            "incumbent": incumbent,
            "gate": str(gate.relative_to(ROOT)) if gate.is_relative_to(ROOT) else str(gate),
            "per_document": per_document or None,
            "rows_capped": capped,
            "gold_documents": len({"|".join(sorted(r["gold_doc_ids"])) for r in rows if r["kind"] == "answer"}),
            "rows": len(rows),
            "contexts_changed": changed,
            "items_not_found": missing,
            "counts": after["counts"],
            "recorded": {k: recorded["metrics"].get(k) for k in keys},
            "recorded_counts": recorded["counts"],
            **({"recorded_capped": {k: before["metrics"].get(k) for k in keys}} if capped else {}),
            "rejudged": {k: after["metrics"].get(k) for k in keys},
            "baseline": rank_one_baseline(rows, challenger),
            "verdict": verdict.as_dict(),
        },
    )


if __name__ == "__main__":
    main()
