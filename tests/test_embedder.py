"""The embedder learns from the loop: fine-tuning on curated questions, its gate, and the blue/green index.

Real sentence-transformers training, real LanceDB tables, on tests/jargon_corpus.py: a corpus written in
house jargon, asked about in plain words, where the bundled MiniLM misses.
"""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from jargon_corpus import write_corpus

from evaluation.embedder_gate import EmbedderGatePolicy, compare_retrieval, decide_retrieval, retrieval_rows
from evaluation.eval_set import split_holdout
from ragtune.knowledge.blue_green import build_green, check_green, green_name, promote_green, switch_back, sync_rows
from ragtune.knowledge.chunker import chunk_document
from ragtune.knowledge.documents import load_documents
from ragtune.knowledge.embedder import Embedder
from ragtune.knowledge.indexing import refresh_index
from ragtune.knowledge.live_index import EmbedderMismatch, embedder_for, read_live, record_fingerprint
from ragtune.knowledge.retriever import LiveRetriever, Retriever
from ragtune.knowledge.store import ChunkStore
from ragtune.settings import REPO_ROOT, load_settings
from training.dataset_builder import chunks_by_doc
from training.embedder import EmbedderTrainingConfig, embedder_pairs, train_embedder


def index_corpus(settings, embedder, docs) -> ChunkStore:
    load = load_documents(docs)
    chunks = [
        c for d in load.documents for c in chunk_document(d, embedder.counter, settings.chunk_tokens, settings.chunk_overlap)
    ]
    store = ChunkStore(settings.lancedb_uri, settings.table_name, embedder.dim)
    refresh_index(load, chunks, store, embedder)
    record_fingerprint(settings, embedder.fingerprint)
    return store


def as_items(records: list[dict]) -> list[dict]:
    return [
        {"id": r["id"], "question": r["question"], "gold_doc_ids": [r["citations"][0]["doc_id"]], "answerable": True}
        for r in records
    ]


def search_with(retriever: Retriever):
    return lambda question, n: retriever.search(question, k=n)


@pytest.mark.slow
def test_fine_tuning_learns_the_house_jargon_and_the_gate_sees_it(home, tmp_path, embedder):
    settings = load_settings()
    paths = write_corpus(tmp_path / "corpus")
    store = index_corpus(settings, embedder, paths["docs"])
    items = as_items(paths["records"])
    train, held = split_holdout(items, 0.3)  # by gold document: the held-out documents are never trained on
    base = Retriever(store, embedder)
    pairs = embedder_pairs(train, lambda q, n: [h.as_dict() for h in base.search(q, k=n)], chunks_by_doc(store, True))
    assert len(pairs) == len(train) and all(p["positive"] != p["negative"] for p in pairs)

    config = EmbedderTrainingConfig(epochs=3, batch_size=16, learning_rate=1e-4, max_minutes=4)
    trained = train_embedder(embedder.model_path, pairs, tmp_path / "tuned", config)
    assert trained["steps"] > 0 and trained["pairs"] == len(pairs)
    tuned = Embedder(str(tmp_path / "tuned"))
    assert tuned.fingerprint != embedder.fingerprint
    green = ChunkStore(settings.lancedb_uri, "green", tuned.dim)
    sync_rows(store, green, tuned)
    check_green(store, green)

    policy = EmbedderGatePolicy(min_items=len(held) - 1)
    before = retrieval_rows(search_with(base), held)
    after = retrieval_rows(search_with(Retriever(green, tuned)), held)
    comparison = compare_retrieval(after, before)
    verdict = decide_retrieval(comparison, policy)
    recall = comparison["metrics"]["recall@5"]
    assert recall["incumbent"] < 0.7, recall  # the jargon defeats the off-the-shelf embedder
    assert verdict.passed and recall["low"] > 0, (verdict.reasons, recall)

    # an embedder that is no better (the same one twice) is never promoted
    same = decide_retrieval(compare_retrieval(before, before), policy)
    assert not same.passed and same.outcome == "not_enough_evidence"
    # nor is the better one on too few items
    assert decide_retrieval(compare_retrieval(after[:10], before[:10]), policy).outcome == "not_enough_evidence"


def test_blue_green_switch_rollback_and_mismatch(home, tmp_path, embedder):
    settings = load_settings()
    paths = write_corpus(tmp_path / "corpus")
    blue = index_corpus(settings, embedder, paths["docs"])
    blue_version = blue.version()
    live = LiveRetriever(settings)
    assert live.current()[0].table == "chunks"

    # a second embedder: the same weights saved elsewhere would share the fingerprint, so perturb one bias
    other = tmp_path / "other-embedder"
    embedder.model.save(str(other))
    tweaked = Embedder(str(other))
    import torch

    with torch.no_grad():
        next(tweaked.model.parameters()).add_(1e-3)
    tweaked.model.save(str(other))
    tweaked = Embedder(str(other))
    assert tweaked.fingerprint != embedder.fingerprint

    built = build_green(settings, tweaked, "7")
    assert built["table"] == green_name(settings, "7", tweaked.fingerprint) and built["table"].startswith("chunks__embedder_7_")
    assert built["chunks"] == blue.count() and read_live(settings).table == "chunks"  # beside the live table, not live yet

    # searches keep succeeding, never empty, while the live table switches back and forth under them, and
    # every one runs on a table with the embedder that built it
    failures, seen, stop = [], [], threading.Event()
    built_by = {"chunks": embedder.fingerprint, built["table"]: tweaked.fingerprint}

    def search_forever():
        while not stop.is_set():
            try:
                live_now, store_now, retriever = live.current()
                hits = retriever.search("How do I get a refund for my laptop?", k=3)
                seen.append((store_now.table_name, retriever.embedder.fingerprint, len(hits)))
            except Exception as exc:  # noqa: BLE001 - any failure is what the test looks for
                failures.append(repr(exc))

    threads = [threading.Thread(target=search_forever) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    promote_green(settings, built["table"], tweaked, "7", reason="test")
    time.sleep(1.5)
    back = switch_back(settings, "test")
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    assert {table for table, _, _ in seen} == {"chunks", built["table"]}  # the searches did cross both switches
    assert all(fingerprint == built_by[table] and n == 3 for table, fingerprint, n in seen)
    assert back["caught_up"] == {"embedded": 0, "deleted": 0}  # nothing changed meanwhile: nothing re-embedded
    assert read_live(settings).table == "chunks" and blue.version() == blue_version

    # the configured embedder changed under a table it did not build: refused, never a silent mix
    with pytest.raises(EmbedderMismatch, match="cannot be mixed"):
        embedder_for(load_settings(embedder=str(other)))
    promote_green(settings, built["table"], tweaked, "7", reason="again")
    live_now, store_now, _ = live.current()
    assert live_now.table == built["table"] and live_now.label(store_now.version()).endswith("@embedder-7")
    assert embedder_for(settings).fingerprint == tweaked.fingerprint  # after a swap: the fine-tuned one, by the pointer


BUILD = """
import sys, time
from ragtune.knowledge.blue_green import build_green
from ragtune.knowledge.embedder import Embedder
from ragtune.settings import load_settings

def slow(done, total):
    print(done, total, flush=True)
    time.sleep(0.5)

build_green(load_settings(), Embedder(sys.argv[1]), "9", slow)
"""


def test_a_killed_green_build_leaves_the_live_table_serving_and_the_rerun_converges(home, tmp_path, embedder, monkeypatch):
    settings = load_settings()
    paths = write_corpus(tmp_path / "corpus")
    blue = index_corpus(settings, embedder, paths["docs"])
    before = (read_live(settings), blue.version(), blue.count())
    other = tmp_path / "other-embedder"
    embedder.model.save(str(other))
    monkeypatch.setenv("RAGTUNE_WRITE_BATCH", "8")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    build = subprocess.Popen([sys.executable, "-c", BUILD, str(other)], env=env, stdout=subprocess.PIPE, text=True)
    first = build.stdout.readline()  # one batch written, the build still going
    assert first.split()[0] == "8", first
    build.send_signal(signal.SIGKILL)
    build.wait()
    assert (read_live(settings), blue.version(), blue.count()) == before  # the live index never noticed
    kept = ChunkStore(settings.lancedb_uri, green_name(settings, "9", Embedder(str(other)).fingerprint)).count()
    assert 8 <= kept < blue.count()

    again = build_green(load_settings(), Embedder(str(other)), "9")
    assert again["table"].startswith("chunks__embedder_9_") and again["chunks"] == blue.count()
    assert again["embedded"] == blue.count() - kept  # the rows embedded before the kill were kept, the rest added


@pytest.mark.integration
def test_the_retrain_job_swaps_in_a_better_embedder_and_one_command_rolls_it_back(home, tmp_path, capsys, monkeypatch):
    from conftest import run_cli

    from assets.behaviour import evaluation_set
    from assets.embedder import embedder_release
    from pipelines.jobs import ADAPTER_RETRAIN
    from pipelines.run_config import ops_config
    from pipelines.runner import run_job
    from ragtune import registry
    from ragtune.behaviour.interactions import InteractionLog
    from ragtune.cli.knowledge import refresh

    settings = load_settings()
    paths = write_corpus(tmp_path / "corpus")
    assert refresh(settings, str(paths["docs"]), allow_empty=False, verbose=False).success
    blue_version = ChunkStore(settings.lancedb_uri, "chunks").version()
    InteractionLog(settings.interactions_db).import_jsonl(paths["interactions"])
    until_embedder = ["interaction_logs", "curated_interactions", "evaluation_set", "embedder_release"]

    def release_embedder(**embedder_config):
        config = ops_config({evaluation_set: {"holdout": 0.3, "min_items": 20}, embedder_release: embedder_config})
        outcome = run_job(settings, ADAPTER_RETRAIN, config, assets=until_embedder, output_nodes=("embedder_release",))
        assert outcome.success, outcome.error
        return outcome.outputs["embedder_release"]

    better = release_embedder(epochs=3, batch_size=16, learning_rate=1e-4, min_items=30)
    assert better["trained"] and better["switched"], better["verdict"]["reasons"]
    tuned = read_live(settings)
    assert tuned.table.startswith("chunks__embedder_1_") and tuned.embedder_version == "1"
    assert registry.aliases(settings.tracking_uri, settings.registered_embedder) == {"champion": "1"}
    listed = run_cli(capsys, "models", "list", "--embedder")
    assert listed["live"] == {**listed["live"], "table": tuned.table, "embedder_version": "1"}
    assert listed["versions"][0]["tags"]["gate_verdict"] == "passed"
    found = run_cli(capsys, "search", "How do I get a refund for my laptop?", "--k", "3")
    assert found["index_version"].endswith("@embedder-1") and found["hits"]

    # an embedder that is no better (learning rate 0: the same weights) is judged, rejected, its table dropped
    same = release_embedder(epochs=1, batch_size=16, learning_rate=0.0, min_items=30)
    assert same["trained"] and not same["switched"] and same["verdict"]["outcome"] != "passed"
    assert read_live(settings).table == tuned.table
    assert not [t for t in ChunkStore(settings.lancedb_uri).db.table_names() if t.startswith("chunks__embedder_2")]
    assert registry.aliases(settings.tracking_uri, settings.registered_embedder) == {"champion": "1", "challenger": "2"}

    # its training pairs are kept for erasure: forgetting a user flags the embedder versions trained on them
    forgotten = run_cli(capsys, "forget", "--user", "user3")
    assert sorted(forgotten["embedder_versions_flagged"]) == ["1", "2"]
    listed = {v["version"]: v["tags"] for v in run_cli(capsys, "models", "list", "--embedder")["versions"]}
    assert listed["1"]["needs_retrain"] == "true"

    rolled = run_cli(capsys, "models", "rollback", "--embedder", "--reason", "test")
    assert rolled["exit"] == 0 and rolled["live_table"] == "chunks" and rolled["embedder_version"] == "base"
    assert ChunkStore(settings.lancedb_uri, "chunks").version() == blue_version  # switched back, nothing re-embedded
    assert registry.aliases(settings.tracking_uri, settings.registered_embedder) == {"challenger": "2"}

    # configuring another embedder under a table it did not build is refused with a clear message
    monkeypatch.setenv("RAGTUNE_EMBEDDER", tuned.embedder_path)
    refused = run_cli(capsys, "search", "laptop refund")
    assert refused["exit"] != 0 and "cannot be mixed" in refused["error"]
