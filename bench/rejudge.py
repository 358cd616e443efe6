"""Judge recorded evaluation rows again under the current metrics and gate, without generating anything.

A kept data home (make run's, or bench/quality.py --keep) holds every candidate's scored rows in
`evaluations/*.jsonl`: the question, the documents served (their ids), the reply and its citations.
Greedy answers do not change, so when a metric's definition changes the recorded replies can be
scored again and the gate decided again on exactly the same answers. Citation accuracy needs only
the row. `identifier_shown` (the gold identifier is in a gold document of the context and in no other
one) needs the served texts: rows recorded before it existed get their context retrieved again from
the live index, and a row whose retrieved ids differ from the recorded ones is left without it
(counted under `contexts_changed`, and judged by its gold document alone, as before). The reference identifier is the curated answer of the same
question in the home's interaction log.

    python bench/rejudge.py --home .bench/quality-huggingface [--gate evaluation/gate.yaml] [--name rejudge-quality-huggingface]
"""

import argparse
import glob
import json
import os
from pathlib import Path

from common import ROOT, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True, help="a data home where adapter_retrain ran")
    parser.add_argument("--gate", default=str(ROOT / "evaluation" / "gate.yaml"))
    parser.add_argument("--challenger", default="challenger_rag")
    parser.add_argument("--incumbent", default="base_rag")
    parser.add_argument("--k", type=int, default=3, help="documents the evaluation served (the harness's k)")
    parser.add_argument("--name", default=None, help="result file name (default rejudge-<home folder name>)")
    args = parser.parse_args()
    os.environ["RAGTUNE_HOME"] = str(Path(args.home).resolve())

    from evaluation.gate import GatePolicy, compare, decide
    from evaluation.harness import documents_of, unique_doc_ids
    from evaluation.metrics import citation_accuracy, identifier_shown
    from ragtune.embedder import embedder_for
    from ragtune.interactions import InteractionLog
    from ragtune.retriever import Retriever
    from ragtune.settings import load_settings
    from ragtune.store import ChunkStore

    settings = load_settings()
    paths = sorted(glob.glob(str(Path(args.home) / "evaluations" / "*.jsonl")))
    rows = [json.loads(line) for path in paths for line in Path(path).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["candidate"] in (args.challenger, args.incumbent)]
    if not rows:
        raise SystemExit(f"no recorded rows of {args.challenger} or {args.incumbent} under {args.home}/evaluations")
    reference = {r["question"]: r.get("correction") or r["answer"] for r in InteractionLog(settings.interactions_db).records()}
    retriever = Retriever(ChunkStore(settings.lancedb_uri, settings.table_name), embedder_for(settings), rrf_k=settings.rrf_k)
    contexts: dict[str, list[dict]] = {}
    before = compare([dict(r) for r in rows], args.challenger, args.incumbent)
    changed = unknown = 0
    for row in rows:
        if row["kind"] != "answer" or "citations" not in row or "citation_accuracy" not in row:
            continue
        row["citation_accuracy"] = citation_accuracy(row["citations"], row["retrieved"], row["gold_doc_ids"])
        if "identifier_shown" in row:
            continue
        if row["question"] not in reference:
            unknown += 1
            continue
        if row["question"] not in contexts:
            contexts[row["question"]] = documents_of([h.as_dict() for h in retriever.search(row["question"], k=args.k)])
        served = contexts[row["question"]]
        if unique_doc_ids(served) != row["retrieved"]:
            changed += 1
            continue
        row["identifier_shown"] = float(identifier_shown(reference[row["question"]], served, row["gold_doc_ids"]))
    policy = GatePolicy.from_yaml(args.gate)
    after = compare(rows, args.challenger, args.incumbent)
    verdict = decide(after, policy)
    keys = ("identifier_match_gold_in_context", "citation_accuracy_gold_in_context", "identifier_match", "citation_accuracy")
    write_result(args.name or f"rejudge-{Path(args.home).resolve().name}", {
        "home": str(args.home), "gate": str(Path(args.gate).resolve().relative_to(ROOT)) if Path(args.gate).resolve().is_relative_to(ROOT) else args.gate,
        "rows": len(rows), "contexts_changed": changed, "questions_not_in_log": unknown,
        "counts": after["counts"],
        "recorded": {k: before["metrics"].get(k) for k in keys},
        "rejudged": {k: after["metrics"].get(k) for k in keys},
        "verdict": verdict.as_dict(),
    })


if __name__ == "__main__":
    main()
