"""RAFT sampling: oracle share close to P, gold never a distractor, hard negatives from the real retriever, deterministic."""

import json
import random

import pytest
from conftest import doc_records

from ragtune.knowledge.chunker import chunk_document
from ragtune.knowledge.documents import load_documents
from ragtune.knowledge.indexing import refresh_index
from ragtune.knowledge.relevance import relevance
from ragtune.knowledge.retriever import Retriever
from ragtune.knowledge.store import ChunkStore
from ragtune.llm.prompting import NOT_COVERED, parse_answer
from ragtune.settings import load_settings
from training.dataset_builder import build_dataset, chunks_by_doc
from training.raft import RaftConfig, build_raft_examples, dataset_hash, in_retrieval_order, split_examples, trim_lengths


@pytest.fixture()
def indexed(tmp_path, corpus, embedder):
    """The 40-document corpus indexed in a temporary LanceDB, with its retriever."""
    s = load_settings()
    load = load_documents(corpus)
    chunks = [c for d in load.documents for c in chunk_document(d, embedder.counter, s.chunk_tokens, s.chunk_overlap)]
    store = ChunkStore(tmp_path / "lancedb", "chunks", embedder.dim)
    refresh_index(load, chunks, store, embedder)
    return store, Retriever(store, embedder)


def synthetic(n_docs: int = 50, chunks_per_doc: int = 2):
    """A toy index: ranking is by a fixed pseudo-random order, enough for the sampler's statistics."""
    by_doc = {
        f"d{i}": [
            {"doc_id": f"d{i}", "chunk_id": f"d{i}-{j}", "title": f"T{i}", "text": f"text {i} {j}", "position": j}
            for j in range(chunks_per_doc)
        ]
        for i in range(n_docs)
    }
    everything = [c for cs in by_doc.values() for c in cs]

    def rank(question: str, n: int) -> list[dict]:
        start = sum(map(ord, question)) % len(everything)
        return (everything[start:] + everything[:start])[:n]

    return by_doc, rank


def records(n: int, n_docs: int = 50) -> list[dict]:
    return [
        {
            "id": f"r{i}",
            "user": "u",
            "question": f"question number {i}",
            "answer": f"answer {i}",
            "gold_doc_ids": [f"d{i % n_docs}"],
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("p", [0.0, 0.3, 0.8, 1.0])
def test_oracle_share_matches_p_and_gold_is_never_a_distractor(p):
    by_doc, rank = synthetic()
    result = build_raft_examples(
        records(2000), rank, by_doc, RaftConfig(oracle_probability=p, distractors=3, random_distractors=1)
    )
    assert len(result.examples) == 2000
    assert result.oracle_share == pytest.approx(p, abs=0.035)  # 3.5 standard errors at n=2000
    for ex in result.examples:
        docs = [d["doc_id"] for d in ex["documents"]]
        gold = set(ex["gold_doc_ids"])
        assert not gold & set(ex["distractor_doc_ids"])
        assert len(ex["distractor_doc_ids"]) == (4 if ex["oracle_kept"] else 5)  # "not covered": as many documents
        assert (gold <= set(docs)) is ex["oracle_kept"]
        target = parse_answer(ex["target"])
        if ex["oracle_kept"]:
            assert target["citations"] == ex["gold_doc_ids"] and target["answer"].startswith("answer")
        else:
            assert target == {"answer": NOT_COVERED, "citations": []}


def test_not_covered_contexts_hold_nothing_from_the_questions_neighbourhood():
    by_doc, rank = synthetic(n_docs=100)
    config = RaftConfig(oracle_probability=0.0, distractors=2, neighbourhood=20)
    result = build_raft_examples(records(200, n_docs=100), rank, by_doc, config)
    assert len(result.examples) == 200
    for record, ex in zip(records(200, n_docs=100), result.examples):
        near = list(dict.fromkeys(c["doc_id"] for c in rank(record["question"], 200)))[:20]  # its top 20 documents
        assert len(ex["documents"]) == 3 and not set(near) & {d["doc_id"] for d in ex["documents"]}
    # a corpus too small for any document beyond those served: skipped with its reason, never a near miss
    tiny_docs, tiny_rank = synthetic(n_docs=3)
    tiny = build_raft_examples(records(5, n_docs=3), tiny_rank, tiny_docs, config)
    assert tiny.examples == [] and tiny.skipped == {"no_off_topic_context": 5}


def test_counterfactual_examples_edit_the_identifier_in_the_oracle_and_the_target():
    by_doc = {
        f"d{i}": [
            {
                "doc_id": f"d{i}",
                "chunk_id": f"d{i}-0",
                "title": f"acme/m{i}",
                "text": f"pipeline(model='acme/m{i}')",
                "position": 0,
            }
        ]
        for i in range(30)
    }
    everything = [c for cs in by_doc.values() for c in cs]

    def rank(question, n):
        return everything[:n]

    recs = [dict(r, answer=f"Use pipeline(model='acme/m{i}').") for i, r in enumerate(records(30, n_docs=30))]
    result = build_raft_examples(recs, rank, by_doc, RaftConfig(oracle_probability=1.0, counterfactual_share=1.0))
    assert len(result.examples) == 30 and all(ex["counterfactual"] for ex in result.examples)
    for i, ex in enumerate(result.examples):
        oracle = next(d for d in ex["documents"] if d["doc_id"] == f"d{i}")
        assert oracle["text"] == f"pipeline(model='acme-labs/m{i}')" and oracle["title"] == f"acme-labs/m{i}"
        assert parse_answer(ex["target"])["answer"] == f"Use pipeline(model='acme-labs/m{i}')."
        others = [d for d in ex["documents"] if d["doc_id"] != f"d{i}"]
        assert others and all("-labs/" not in d["text"] for d in others)  # only the oracle is edited
    many = [dict(r, id=f"{r['id']}-{n}") for n in range(20) for r in recs]  # 600 records, each its own draws
    share = build_raft_examples(many, rank, by_doc, RaftConfig(oracle_probability=1.0, counterfactual_share=0.15))
    assert len(share.examples) == 600
    assert 0.15 - 0.05 < sum(ex["counterfactual"] for ex in share.examples) / 600 < 0.15 + 0.05  # 3.4 standard errors
    # an answer without the document's identifier has nothing to edit: the example stays as it was
    plain = build_raft_examples(records(5), *reversed(synthetic()), RaftConfig(oracle_probability=1.0, counterfactual_share=1.0))
    assert len(plain.examples) == 5 and not any(ex["counterfactual"] for ex in plain.examples)


def test_retrieval_order_keeps_the_served_order_and_places_an_unranked_oracle_anywhere():
    by_doc, rank = synthetic()
    result = build_raft_examples(records(400), rank, by_doc, RaftConfig(order="retrieval", distractors=2, candidates=6))
    positions = set()
    for record, ex in zip(records(400), result.examples):
        ranked = [c["chunk_id"] for c in rank(record["question"], 6)]
        top = ranked[: len(ex["documents"])]
        served = [d["chunk_id"] for d in ex["documents"] if d["chunk_id"] in top]
        assert served == sorted(served, key=top.index)  # as the retriever ranked them
        positions.update(i for i, d in enumerate(ex["documents"]) if d["chunk_id"] not in top)
    assert positions == {0, 1, 2}  # the oracle the retriever missed lands at every place
    chunks = [{"chunk_id": c} for c in "abcdef"]
    assert in_retrieval_order([chunks[1], chunks[0]], chunks, random.Random(0)) == [chunks[0], chunks[1]]
    # an oracle ranked 5th beside the two best distractors would not be served: not always placed last
    places = {
        in_retrieval_order([chunks[0], chunks[1], chunks[4]], chunks, random.Random(seed)).index(chunks[4]) for seed in range(20)
    }
    assert places == {0, 1, 2}
    with pytest.raises(ValueError, match="order must be one of shuffled, retrieval"):
        RaftConfig(order="ranked")


def test_sampling_is_deterministic_and_stable_as_data_grows():
    by_doc, rank = synthetic()
    config = RaftConfig(random_distractors=2, seed=7)
    first = build_raft_examples(records(300), rank, by_doc, config).examples
    assert first == build_raft_examples(records(300), rank, by_doc, config).examples
    grown = build_raft_examples(records(400), rank, by_doc, config).examples
    assert grown[:300] == first  # each record draws from its own seeded generator
    other = build_raft_examples(records(300), rank, by_doc, RaftConfig(random_distractors=2, seed=8)).examples
    assert other != first
    train, validation = split_examples(first, 0.2, seed=7)
    assert 30 <= len(validation) <= 90 and len(train) + len(validation) == 300
    assert split_examples(first, 0.2, seed=7) == (train, validation)
    assert dataset_hash(train, validation, config) == dataset_hash(*split_examples(first, 0.2, seed=7), config)
    assert dataset_hash(train, validation, config) != dataset_hash(train, validation, RaftConfig(seed=8))


def test_records_without_gold_in_the_index_are_skipped_with_a_reason():
    by_doc, rank = synthetic()
    recs = records(3) + [
        {"id": "x", "user": "u", "question": "q", "answer": "a", "gold_doc_ids": []},
        {"id": "y", "user": "u", "question": "q", "answer": "a", "gold_doc_ids": ["not-indexed"]},
        {**records(4)[3], "id": "z", "answer": "write to ops@corp..com"},  # PII the scrubber missed: this one goes
    ]
    result = build_raft_examples(recs, rank, by_doc, RaftConfig())
    assert len(result.examples) == 3
    assert result.skipped == {"no_gold_documents": 1, "gold_not_in_index": 1, "pii_residue": 1}


def test_hard_negatives_are_the_retrievers_best_non_gold_chunks(indexed, corpus):
    store, retriever = indexed
    recs = [dict(r, gold_doc_ids=[c["doc_id"] for c in r["citations"]]) for r in doc_records(corpus)[:12]]
    config = RaftConfig(distractors=3, oracle_probability=1.0, candidates=30)

    def rank(question, n):
        return [h.as_dict() for h in retriever.search(question, k=n, groups=[])]

    result = build_raft_examples(recs, rank, chunks_by_doc(store, public_only=True), config)
    assert len(result.examples) == 12
    for ex, rec in zip(result.examples, recs):
        expected = [h["chunk_id"] for h in rank(rec["question"], 30) if h["doc_id"] not in rec["gold_doc_ids"]][:3]
        chosen = [d["chunk_id"] for d in ex["documents"] if d["doc_id"] not in rec["gold_doc_ids"]]
        assert sorted(chosen) == sorted(expected)
        assert any(d["doc_id"] in rec["gold_doc_ids"] for d in ex["documents"])


def test_dataset_on_disk_renders_the_chat_template(indexed, corpus, tokenizer, embedder, tmp_path):
    store, retriever = indexed
    recs = [dict(r, gold_doc_ids=[c["doc_id"] for c in r["citations"]]) for r in doc_records(corpus)[:20]]
    config = RaftConfig(oracle_probability=0.5, validation_fraction=0.2)
    built = build_dataset(recs, store, retriever, tokenizer, config, tmp_path / "ds", floor_quantile=0.05, context_k=3)
    assert built.train + built.validation == 20 and built.validation >= 1
    meta = json.loads((built.folder / "meta.json").read_text())
    assert meta["hash"] == built.digest and meta["index_version"] == store.version()
    # the relevance floor, measured on these 20 in-scope questions as serving would retrieve for them: one below it
    floor = meta["relevance_floor"]
    assert floor == built.relevance_floor.as_dict() and floor["questions"] == 20 and floor["embedder"] == embedder.fingerprint
    served = [
        relevance(embedder, r["question"], [h.as_dict() for h in retriever.search(r["question"], k=3, groups=[])]) for r in recs
    ]
    assert sum(v < floor["value"] for v in served) == 1 and floor["value"] in served
    rows = [json.loads(line) for line in (built.folder / "train.jsonl").read_text().splitlines()]
    for row in rows:
        assert row["prompt"].startswith("<|im_start|>system") and row["prompt"].endswith("<|im_start|>assistant\n")
        assert row["question"].strip() in row["prompt"] and all(f"[{d['doc_id']}]" in row["prompt"] for d in row["documents"])
        assert row["completion"].endswith(tokenizer.eos_token)
        assert parse_answer(row["completion"].removesuffix(tokenizer.eos_token)) == parse_answer(row["target"])


def test_trim_lengths_cuts_the_longest_documents_first():
    assert trim_lengths([100, 40, 300], 0) == [100, 40, 300]
    assert trim_lengths([100, 40, 300], 150) == [100, 40, 150]  # only the longest is cut
    assert trim_lengths([100, 40, 300], 260) == [70, 40, 70]  # then the next longest, to the same cap
    assert sum(trim_lengths([5, 5], 100)) == 0


def test_examples_over_the_token_budget_keep_their_answer(indexed, corpus, tokenizer, tmp_path):
    """Documents are cut to fit max_tokens, never the answer; examples that cannot fit are skipped with a reason."""
    store, retriever = indexed
    recs = [dict(r, gold_doc_ids=[c["doc_id"] for c in r["citations"]]) for r in doc_records(corpus)[:10]]
    full = build_dataset(
        recs, store, retriever, tokenizer, RaftConfig(oracle_probability=1.0, validation_fraction=0.0), tmp_path / "a"
    )
    longest = max(
        len(tokenizer(r["prompt"] + r["completion"], add_special_tokens=False)["input_ids"])
        for r in map(json.loads, (full.folder / "train.jsonl").read_text().splitlines())
    )
    budget = longest - 60
    built = build_dataset(
        recs,
        store,
        retriever,
        tokenizer,
        RaftConfig(oracle_probability=1.0, validation_fraction=0.0, max_tokens=budget),
        tmp_path / "b",
    )
    assert built.train == 10 and built.trimmed >= 1
    for row in map(json.loads, (built.folder / "train.jsonl").read_text().splitlines()):
        assert len(tokenizer(row["prompt"] + row["completion"], add_special_tokens=False)["input_ids"]) <= budget
        assert parse_answer(row["completion"].removesuffix(tokenizer.eos_token)) == parse_answer(row["target"])
        assert all(f"[{d['doc_id']}]" in row["prompt"] for d in row["documents"])
    tiny = build_dataset(recs, store, retriever, tokenizer, RaftConfig(oracle_probability=1.0, max_tokens=128), tmp_path / "c")
    assert tiny.train + tiny.validation < 10 and tiny.skipped.get("over_max_tokens", 0) >= 1
