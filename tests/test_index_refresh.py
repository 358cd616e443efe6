"""The knowledge assets on a temporary data home, through the real Dagster job and LanceDB."""

import dagster as dg
import pytest

from pipelines.runner import get_instance
from ragtune.cli.knowledge import refresh
from ragtune.knowledge.chunker import chunk_document
from ragtune.knowledge.documents import load_documents
from ragtune.knowledge.index_admin import rollback_index
from ragtune.knowledge.retriever import Retriever
from ragtune.knowledge.store import ChunkStore
from ragtune.settings import load_settings

pytestmark = pytest.mark.integration

PHOTO = "# Photosynthesis\n\nChlorophyll in leaves captures sunlight and converts carbon dioxide and water into glucose, releasing oxygen.\n"
RARE = "# Release notes\n\nThe flag zyxquorblat disables the legacy exporter.\n"
SECRET = "---\nacl: [finance]\n---\n# Payroll calendar\n\nSalaries are paid on the 25th; bonus payouts happen in March.\n"


def run(source, **kw):
    outcome = refresh(load_settings(), str(source), allow_empty=kw.get("allow_empty", False), verbose=False)
    return outcome


def expected_chunk_ids(source, embedder):
    s = load_settings()
    docs = load_documents(source).documents
    return {c.chunk_id for d in docs for c in chunk_document(d, embedder.counter, s.chunk_tokens, s.chunk_overlap)}


def stored_ids(store):
    ids = store.read_columns(["chunk_id"]).column("chunk_id").to_pylist()
    assert len(ids) == len(set(ids)), "duplicate chunk ids in the index"
    return set(ids)


def test_incremental_refresh_embeds_only_what_changed(home, corpus, embedder):
    (corpus / "photo.md").write_text(PHOTO)
    (corpus / "rare.md").write_text(RARE)
    first = run(corpus)
    assert first.success, first.error
    report = first.outputs["chunk_index"]
    store = ChunkStore(load_settings().lancedb_uri)
    assert report["docs_added"] == 42
    assert report["chunks_embedded"] == report["chunks_total"] == len(expected_chunk_ids(corpus, embedder))
    assert stored_ids(store) == expected_chunk_ids(corpus, embedder)

    # The run is on the persistent instance, with its checks passed.
    instance = get_instance(load_settings())
    assert instance.get_run_by_id(first.run_id).status == dg.DagsterRunStatus.SUCCESS
    for check in ("chunks_are_valid", "index_vectors_are_valid"):
        key = dg.AssetCheckKey(dg.AssetKey("document_chunks" if check == "chunks_are_valid" else "chunk_index"), check)
        record = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
        assert record.event.dagster_event.event_specific_data.passed, check

    unchanged = run(corpus).outputs["chunk_index"]
    assert unchanged["chunks_embedded"] == 0 and unchanged["chunks_deleted"] == 0
    assert unchanged["docs_unchanged"] == 42 and unchanged["index_version"] == report["index_version"]

    target = sorted(corpus.glob("*.md"))[0]
    before = expected_chunk_ids(corpus, embedder)
    target.write_text(target.read_text() + "\n\nA new closing paragraph about deployment on edge devices.\n")
    after = expected_chunk_ids(corpus, embedder)
    edited = run(corpus).outputs["chunk_index"]
    assert edited["docs_updated"] == 1 and edited["docs_unchanged"] == 41
    assert edited["chunks_embedded"] == len(after - before) >= 1
    assert edited["chunks_deleted"] == len(before - after)
    assert stored_ids(store) == after

    version_with_photo = edited["index_version"]
    (corpus / "photo.md").unlink()
    deleted = run(corpus).outputs["chunk_index"]
    assert deleted["docs_deleted"] == 1 and deleted["chunks_embedded"] == 0
    assert "photo.md" not in store.chunk_ids_by_doc()
    assert stored_ids(store) == expected_chunk_ids(corpus, embedder)

    restored = rollback_index(load_settings(), reason="test")
    assert restored["restored_from"] == version_with_photo
    assert "photo.md" in store.chunk_ids_by_doc()


def test_hybrid_search_finds_rare_terms_paraphrases_and_respects_acl(home, corpus, embedder):
    (corpus / "photo.md").write_text(PHOTO)
    (corpus / "rare.md").write_text(RARE)
    (corpus / "payroll.md").write_text(SECRET)
    assert run(corpus).success
    retriever = Retriever(ChunkStore(load_settings().lancedb_uri), embedder)
    assert retriever.search("zyxquorblat", k=1)[0].doc_id == "rare.md"
    assert retriever.search("zyxquorblat", k=1, mode="fts")[0].doc_id == "rare.md"
    assert retriever.search("how do green plants make food from light", k=3)[0].doc_id == "photo.md"
    hit = retriever.search("when are salaries paid", k=3, groups=["finance"])
    assert hit[0].doc_id == "payroll.md"
    for groups in ([], ["engineering"]):
        for mode in ("hybrid", "vector", "fts"):
            assert all(
                h.doc_id != "payroll.md"
                for h in retriever.search("when are salaries paid payroll", k=50, groups=groups, mode=mode)
            )


def test_bad_files_are_reported_and_unreadable_ones_keep_their_chunks(home, corpus, monkeypatch):
    keep = corpus / "keep.md"
    keep.write_text(RARE)
    assert run(corpus).success
    monkeypatch.setenv("RAGTUNE_MAX_FILE_BYTES", "2000")
    keep.write_text(RARE + "padding " * 400)  # now over the size limit: skipped, old chunks kept
    (corpus / "empty.md").write_text("")
    outcome = run(corpus)
    assert outcome.success, outcome.error
    report = outcome.outputs["chunk_index"]
    reasons = {s["path"]: s["reason"] for s in report["skipped"]}
    assert "file too large" in reasons["keep.md"] and reasons["empty.md"] == "empty file"
    assert "keep.md" in ChunkStore(load_settings().lancedb_uri).chunk_ids_by_doc()
    assert any("keep.md" in n for n in report["notes"])


def test_empty_source_never_wipes_the_index(home, corpus, tmp_path):
    assert run(corpus).success
    store = ChunkStore(load_settings().lancedb_uri)
    count = store.count()
    empty = tmp_path / "empty"
    empty.mkdir()
    outcome = run(empty)
    assert not outcome.success and "refusing to delete" in outcome.error
    assert store.count() == count
    wiped = run(empty, allow_empty=True)
    assert wiped.success and store.count() == 0


def test_vector_index_is_built_past_the_threshold_and_kept_current(tmp_path, embedder):
    from conftest import DEMO

    from ragtune.knowledge.indexing import refresh_index

    s = load_settings()
    source = DEMO / "docs"
    load = load_documents(source)
    chunks = [c for d in load.documents for c in chunk_document(d, embedder.counter, s.chunk_tokens, s.chunk_overlap)]
    assert len(chunks) >= 256
    store = ChunkStore(tmp_path / "lancedb", "chunks", embedder.dim)
    small = refresh_index(load, chunks[:100], store, embedder, vector_index_min_rows=256)
    assert "vector:created" not in small.indexes  # below the threshold exact search is used
    full = refresh_index(load, chunks, store, embedder, vector_index_min_rows=256)
    assert "vector:created" in full.indexes
    kinds = {tuple(ix.columns): ix.index_type for ix in store.table().list_indices()}
    assert kinds[("vector",)].upper().startswith("IVF") and ("text",) in kinds
    target = chunks[0]
    hits = Retriever(store, embedder).search(target.text, k=5, mode="vector")
    assert target.chunk_id in [h.chunk_id for h in hits]
    edited = refresh_index(load, chunks[:-5], store, embedder, vector_index_min_rows=256)
    assert "optimized" in full.indexes
    unindexed = [store.table().index_stats(ix.name).num_unindexed_rows for ix in store.table().list_indices()]
    assert unindexed == [0, 0]  # every new row folded into both indexes
    assert edited.chunks_deleted == 5 and "optimized" in edited.indexes
    assert store.count() == len(chunks) - 5
