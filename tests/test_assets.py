"""Assets exercised directly, with real resources on a temporary data home: no job, no daemon, no training.

`dg.materialize` runs a few assets and their checks in process; an asset function can also be called
as a plain function with its inputs, config and resources (Dagster's direct invocation).
"""

import dagster as dg
import numpy as np
import pytest

from assets.behaviour import EvaluationSetConfig, evaluation_set
from assets.interactions import curated_has_no_pii, curated_interactions, curated_is_not_empty, interaction_logs
from assets.knowledge import chunk_index, chunks_are_valid, document_chunks, raw_documents
from assets.resources import EmbedderResource, InteractionLogResource, LanceDBResource
from ragtune.behaviour.interactions import InteractionLog
from ragtune.knowledge.store import ChunkStore
from ragtune.settings import load_settings


def test_the_knowledge_assets_index_good_files_and_skip_a_bad_one_with_its_reason(home, corpus):
    for extra in sorted(corpus.glob("*.md"))[5:]:  # five real documents
        extra.unlink()
    (corpus / "notes.xlsx").write_bytes(b"PK\x03\x04 a spreadsheet")  # a file type no loader reads
    result = dg.materialize(
        [raw_documents, document_chunks, chunk_index, chunks_are_valid],
        resources={"lancedb": LanceDBResource(home=str(home)), "embedder": EmbedderResource()},
        run_config={"ops": {"raw_documents": {"config": {"source_dir": str(corpus)}}}},
    )
    assert result.success
    loaded = result.output_for_node("raw_documents")
    assert len(loaded.documents) == 5
    assert [(s.path, s.reason) for s in loaded.skipped] == [("notes.xlsx", "unsupported file type '.xlsx'")]
    chunks = result.output_for_node("document_chunks")
    assert {c.doc_id for c in chunks} == {d.doc_id for d in loaded.documents}
    assert all(check.passed for check in result.get_asset_check_evaluations())
    s = load_settings()
    stored = ChunkStore(s.lancedb_uri, s.table_name).read_columns(["chunk_id"]).column("chunk_id").to_pylist()
    assert sorted(stored) == sorted(c.chunk_id for c in chunks)


def test_curation_assets_keep_approved_answers_scrub_pii_and_pass_their_blocking_checks(home):
    s = load_settings()
    log = InteractionLog(s.interactions_db)
    base = {"user": "u1", "citations": [{"doc_id": "docs/a.md"}]}
    log.append(
        {
            **base,
            "id": "up",
            "question": "How do I load the sentiment model here?",
            "answer": "Use pipeline('sentiment-analysis') as docs/a.md says.",
            "feedback": "up",
        }
    )
    log.append(
        {
            **base,
            "id": "pii",
            "question": "Email jane.doe@example.com how to load the parser model?",
            "answer": "Load it with AutoModel.from_pretrained('org/parser').",
            "feedback": "up",
        }
    )
    log.append(
        {
            **base,
            "id": "down",
            "question": "What does the embedder return for one sentence?",
            "answer": "Nothing useful at all, sorry.",
            "feedback": "down",
        }
    )
    result = dg.materialize(
        [interaction_logs, curated_interactions, curated_has_no_pii, curated_is_not_empty],
        resources={"interaction_log": InteractionLogResource(home=str(home))},
    )
    assert result.success
    curated = result.output_for_node("curated_interactions")
    assert sorted(r["id"] for r in curated) == ["pii", "up"]  # the down-voted answer is not a target
    scrubbed = next(r for r in curated if r["id"] == "pii")
    assert "jane.doe@example.com" not in scrubbed["question"] and "<EMAIL" in scrubbed["question"]
    assert all(check.passed for check in result.get_asset_check_evaluations())


def curated_records(documents: int, per_document: int) -> list[dict]:
    return [
        {
            "id": f"r{d}-{q}",
            "ts": "2026-01-01T00:00:00+00:00",
            "user": "u",
            "question": f"question {q} on model {d}?",
            "answer": f"Use org/model-{d}.",
            "gold_doc_ids": [f"org/model-{d}"],
            "source": "feedback",
        }
        for d in range(documents)
        for q in range(per_document)
    ]


def test_the_evaluation_set_asset_caps_questions_per_document_and_stops_when_too_few(home):
    records = curated_records(documents=60, per_document=6)
    s = load_settings()
    store = ChunkStore(s.lancedb_uri, s.table_name, 4)
    rows = [
        {
            "chunk_id": f"org/model-{d}#0",
            "doc_id": f"org/model-{d}",
            "title": "",
            "text": "t",
            "position": 0,
            "n_tokens": 1,
            "acl": [],
            "public": True,
            "source": "",
            "doc_hash": "",
        }
        for d in range(60)
    ]
    store.upsert(rows, np.full((60, 4), 0.1, dtype=np.float32))
    lancedb = LanceDBResource(home=str(home))
    output = evaluation_set(curated_interactions=records, config=EvaluationSetConfig(min_items=1, holdout=0.5), lancedb=lancedb)
    chosen = output.value
    documents = chosen["documents"]
    assert documents > 10 and len(chosen["items"]) == 3 * documents  # the default cap: 3 of each document's 6
    assert len(chosen["held_out_ids"]) == 6 * documents and output.metadata["capped_per_document"].value == 3 * documents
    uncapped = evaluation_set(
        curated_interactions=records, lancedb=lancedb, config=EvaluationSetConfig(min_items=1, holdout=0.5, per_document=0)
    ).value
    assert len(uncapped["items"]) == 6 * documents
    with pytest.raises(dg.Failure, match="usable answerable evaluation items"):
        evaluation_set(curated_interactions=records, config=EvaluationSetConfig(holdout=0.5), lancedb=lancedb)  # gate needs 100
