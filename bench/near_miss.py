"""Are "unanswerable" contexts unanswerable? Checked against APIBench's own task labels, on recorded rows.

Every APIBench document names its task (`functionality`: "Text Generation", "Image Classification", ...).
An API for the same task as the gold one answers a question like "classify images of cats" as well.
On a recorded evaluation (the adapter's scored rows in MLflow, as bench/rejudge.py reads them) this counts,
for the base model's rows:
- **near misses**: answer probes whose gold document retrieval did not serve. Share with a served
  document of the gold's task: how often "the gold document is missing" still leaves an answer in the
  context (the contexts RAFT's "not covered" examples and the unanswerable probes were made of before
  decision 36).
- **off-topic**: unanswerable probes (the documents ranked beyond the question's top 20,
  ragtune.behaviour.contexts). The same share: how often the off-topic context holds an API for the task.
Task labels come from the split's API file through the importer's own id assignment; no generation.

    python bench/near_miss.py --home .bench/quality-huggingface --split huggingface
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

from common import APIBENCH, SPLITS, write_result


def share(rows: list[dict], task: dict[str, str]) -> dict:
    """Share of rows with a served document of a gold document's task (gold documents themselves excluded)."""
    hits = 0
    for row in rows:
        wanted = {task.get(g) for g in row["gold_doc_ids"]} - {None, ""}
        served = [d for d in row["retrieved"] if d not in row["gold_doc_ids"]]
        hits += any(task.get(d) in wanted for d in served)
    return {"n": len(rows), "with_a_same_task_document": hits, "share": round(hits / len(rows), 4) if rows else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True, help="a data home where adapter_retrain ran")
    parser.add_argument("--split", choices=sorted(SPLITS), default="huggingface")
    parser.add_argument("--version", default="latest", help="the evaluated adapter: registry version, alias, or latest")
    parser.add_argument("--name", default=None, help="result file name (default near_miss-SPLIT)")
    args = parser.parse_args()
    os.environ["RAGTUNE_HOME"] = str(Path(args.home).resolve())

    from evaluation.release import ITEMS
    from ragtune import registry
    from ragtune.cli.apibench import assign_doc_ids
    from ragtune.jsonl import read_jsonl
    from ragtune.settings import load_settings

    apis = [json.loads(line) for line in (APIBENCH / SPLITS[args.split][0]).read_text().splitlines() if line.strip()]
    task = {doc_id: str(api.get("functionality", "")) for doc_id, api in zip(assign_doc_ids(apis), apis)}
    settings = load_settings()
    versions = registry.list_versions(settings.tracking_uri, settings.registered_model)
    wanted = versions[0]["version"] if args.version == "latest" and versions else args.version
    run_id = next((v["run_id"] for v in versions if v["version"] == wanted), None)
    if run_id is None:
        raise SystemExit(f"no evaluated adapter {args.version!r} in {args.home}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = read_jsonl(registry.client(settings.tracking_uri).download_artifacts(run_id, ITEMS, tmp))
    base = [r for r in rows if r["candidate"] == "base_rag"]
    missed = [r for r in base if r["kind"] == "answer" and not set(r["retrieved"]) & set(r["gold_doc_ids"])]
    off_topic = [r for r in base if r["kind"] == "unanswerable" and r["gold_doc_ids"]]
    same_task_documents = sorted(sum(t == task[d] for t in task.values()) - 1 for d in task)
    write_result(
        args.name or f"near_miss-{args.split}",
        {
            "split": args.split,
            "home": str(args.home),
            "version": wanted,
            "documents": len(task),
            "median_other_documents_of_the_same_task": same_task_documents[len(same_task_documents) // 2],
            "near_misses": share(missed, task),
            "off_topic": share(off_topic, task),
        },
    )


if __name__ == "__main__":
    main()
