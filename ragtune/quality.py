"""Great Expectations (1.x, ephemeral context) suites for the data ragtune produces.

Each suite is a list of expectations run against a pandas frame; the result is a
`SuiteResult` that the Dagster asset checks turn into pass/fail plus metadata.
Nothing is written to disk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class SuiteResult:
    suite: str
    success: bool
    rows: int
    failures: list[dict] = field(default_factory=list)  # one per failed expectation

    def describe(self) -> str:
        if self.success:
            return f"{self.suite}: all expectations met on {self.rows} rows"
        return f"{self.suite}: " + "; ".join(f"{f['expectation']} on {f['column']}: {f['unexpected']} bad" for f in self.failures)


def run_suite(name: str, df: pd.DataFrame, expectations: list) -> SuiteResult:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas(name)
        .add_dataframe_asset(name)
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": df})
    )
    suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
    result = batch.validate(suite)
    failures = [
        {
            "expectation": r.expectation_config.type,
            "column": r.expectation_config.kwargs.get("column"),
            "unexpected": r.result.get("unexpected_count"),
            "examples": [str(v)[:80] for v in (r.result.get("partial_unexpected_list") or [])[:5]],
        }
        for r in result.results
        if not r.success
    ]
    return SuiteResult(suite=name, success=bool(result.success), rows=len(df), failures=failures)


def validate_chunks(df: pd.DataFrame, max_tokens: int) -> SuiteResult:
    """Chunk text is non-empty, within the token budget, and chunk ids are unique."""
    import great_expectations as gx

    if df.empty:
        return SuiteResult("document_chunks", True, 0)
    return run_suite(
        "document_chunks",
        df[["chunk_id", "text", "n_tokens"]],
        [
            gx.expectations.ExpectColumnValuesToNotBeNull(column="text"),
            gx.expectations.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1),
            gx.expectations.ExpectColumnValuesToBeBetween(column="n_tokens", min_value=1, max_value=max_tokens),
            gx.expectations.ExpectColumnValuesToBeUnique(column="chunk_id"),
        ],
    )


def vector_frame(chunk_ids: list[str], vectors: np.ndarray | list) -> pd.DataFrame:
    """One row per stored vector with its dimension and whether it holds a NaN or inf."""
    dims, bad = [], []
    for v in vectors:
        arr = np.asarray(v if v is not None else [], dtype=np.float32)
        dims.append(int(arr.shape[0]))
        bad.append(bool(arr.size == 0 or not np.isfinite(arr).all()))
    return pd.DataFrame({"chunk_id": chunk_ids, "dim": dims, "non_finite": bad})


def validate_vectors(df: pd.DataFrame, dim: int) -> SuiteResult:
    """Every stored vector has the embedder's dimension, holds no NaN, and ids are unique."""
    import great_expectations as gx

    if df.empty:
        return SuiteResult("chunk_vectors", True, 0)
    return run_suite(
        "chunk_vectors",
        df,
        [
            gx.expectations.ExpectColumnValuesToBeBetween(column="dim", min_value=dim, max_value=dim),
            gx.expectations.ExpectColumnValuesToBeInSet(column="non_finite", value_set=[False]),
            gx.expectations.ExpectColumnValuesToBeUnique(column="chunk_id"),
        ],
    )
