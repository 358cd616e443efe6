"""Group `knowledge`: documents -> chunks -> the LanceDB index, and their checks."""

from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.checks import check_result
from assets.resources import EmbedderResource, LanceDBResource
from ragtune.knowledge.chunker import Chunk, chunk_document
from ragtune.knowledge.documents import LoadResult, load_documents
from ragtune.knowledge.indexing import LiveIndexMoved, record_history, refresh_index
from ragtune.knowledge.live_index import read_live, record_fingerprint
from ragtune.knowledge.purge_index import read_purged, without_purged
from ragtune.quality import validate_chunks, validate_vectors, vector_frame

GROUP = "knowledge"
INDEX_WRITER_POOL = "lancedb_writer"  # one index writer at a time; the limit lives in dagster.yaml


class SourceConfig(dg.Config):
    source_dir: str | None = Field(None, description="Folder of documents; empty = RAGTUNE_SOURCE_DIR.")
    max_file_bytes: int | None = Field(None, description="Skip files larger than this; empty = RAGTUNE_MAX_FILE_BYTES.")


class ChunkingConfig(dg.Config):
    chunk_tokens: int | None = Field(None, description="Chunk size in embedder tokens; empty = RAGTUNE_CHUNK_TOKENS.")
    chunk_overlap: int | None = Field(None, description="Overlap in tokens; empty = RAGTUNE_CHUNK_OVERLAP.")


class IndexConfig(dg.Config):
    allow_empty_source: bool = Field(False, description="Let an empty source delete every indexed chunk.")


def chunk_budget(lancedb: LanceDBResource, config: ChunkingConfig) -> tuple[int, int]:
    s = lancedb.settings()
    return config.chunk_tokens or s.chunk_tokens, config.chunk_overlap if config.chunk_overlap is not None else s.chunk_overlap


@dg.asset(group_name=GROUP, description="Documents loaded from the source folder; bad files skipped with a reason.")
def raw_documents(context: dg.AssetExecutionContext, config: SourceConfig, lancedb: LanceDBResource) -> dg.Output[LoadResult]:
    s = lancedb.settings()
    source = Path(config.source_dir) if config.source_dir else s.source_dir
    result = without_purged(load_documents(source, config.max_file_bytes or s.max_file_bytes), read_purged(s))
    for skip in result.skipped:
        context.log.warning(f"skipped {skip.path}: {skip.reason}")
    return dg.Output(
        result,
        metadata={
            "source": str(source),
            "documents": len(result.documents),
            "skipped": len(result.skipped),
            "skipped_files": dg.MetadataValue.json([{"path": s.path, "reason": s.reason} for s in result.skipped]),
            "notes": dg.MetadataValue.json(result.notes),
        },
    )


@dg.asset(group_name=GROUP, description="Documents split into chunks measured in embedder tokens, with stable ids.")
def document_chunks(
    raw_documents: LoadResult, config: ChunkingConfig, lancedb: LanceDBResource, embedder: EmbedderResource
) -> dg.Output[list[Chunk]]:
    size, overlap = chunk_budget(lancedb, config)
    counter = embedder.get().counter
    chunks = [c for doc in raw_documents.documents for c in chunk_document(doc, counter, size, overlap)]
    tokens = [c.n_tokens for c in chunks]
    return dg.Output(
        chunks,
        metadata={
            "chunks": len(chunks),
            "chunk_tokens": size,
            "chunk_overlap": overlap,
            "mean_tokens": round(sum(tokens) / len(tokens), 1) if tokens else 0.0,
            "max_tokens": max(tokens, default=0),
        },
    )


@dg.asset(group_name=GROUP, pool=INDEX_WRITER_POOL, description="Chunks embedded into LanceDB; only new or changed ones.")
def chunk_index(
    context: dg.AssetExecutionContext,
    config: IndexConfig,
    raw_documents: LoadResult,
    document_chunks: list[Chunk],
    lancedb: LanceDBResource,
    embedder: EmbedderResource,
) -> dg.Output[dict]:
    s = lancedb.settings()

    def progress(done: int, total: int) -> None:
        context.log.info(f"embedded {done}/{total} new chunks")

    for attempt in (1, 2):  # a blue/green switch landed while this refresh waited: refresh the table live now
        _, store, model = embedder.open_live()
        try:
            report = refresh_index(
                raw_documents,
                document_chunks,
                store,
                model,
                allow_empty=config.allow_empty_source,
                still_live=lambda: read_live(s).table == store.table_name,  # noqa: B023 - called in this iteration
                write_batch=s.write_batch,
                vector_index_min_rows=s.vector_index_min_rows,
                keep_versions_days=s.keep_index_versions_days,
                progress=progress,
            )
            break
        except LiveIndexMoved as moved:
            if attempt == 2:
                raise
            context.log.info(f"{moved}; refreshing the table live now")
    record_fingerprint(s, model.fingerprint)  # the live table is now tied to the embedder that wrote it
    record_history(
        s.index_history,
        "refresh",
        run_id=context.run_id,
        table=store.table_name,
        version_before=report.version_before,
        version_after=report.index_version,
        chunks_embedded=report.chunks_embedded,
        chunks_deleted=report.chunks_deleted,
    )
    summary = {k: v for k, v in report.as_dict().items() if isinstance(v, (int, float))}
    return dg.Output(
        report.as_dict(),
        metadata={
            **summary,
            "indexes": dg.MetadataValue.json(report.indexes),
            "skipped_files": dg.MetadataValue.json(report.skipped),
            "lancedb_uri": str(s.lancedb_uri),
        },
    )


@dg.asset_check(
    asset=document_chunks, blocking=True, description="Great Expectations: text non-empty, within the token budget, ids unique."
)
def chunks_are_valid(document_chunks: list[Chunk], lancedb: LanceDBResource) -> dg.AssetCheckResult:
    s = lancedb.settings()
    df = pd.DataFrame([{"chunk_id": c.chunk_id, "text": c.text, "n_tokens": c.n_tokens} for c in document_chunks])
    result = validate_chunks(df, max_tokens=s.chunk_tokens)
    return check_result(result)


@dg.asset_check(asset=chunk_index, description="Great Expectations: every stored vector has the right dimension and no NaN.")
def index_vectors_are_valid(lancedb: LanceDBResource, embedder: EmbedderResource) -> dg.AssetCheckResult:
    _, store, model = embedder.open_live()
    table = store.read_columns(["chunk_id", "vector"]).to_pydict()
    result = validate_vectors(vector_frame(table["chunk_id"], table["vector"]), model.dim)
    return check_result(result)


KNOWLEDGE_ASSETS = [raw_documents, document_chunks, chunk_index]
KNOWLEDGE_CHECKS = [chunks_are_valid, index_vectors_are_valid]
