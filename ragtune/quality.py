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


# -- interactions and the RAFT dataset ------------------------------------------
CURATED_COLUMNS = ["id", "ts", "user", "question", "answer", "gold_doc_ids", "source"]
# Unambiguous secret and PII shapes, checked independently of the scrubber that should have removed them.


def curated_frame(records: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(records, columns=CURATED_COLUMNS)


def validate_curated_schema(df: pd.DataFrame) -> SuiteResult:
    """The curated records have exactly the expected columns, unique ids, text, and a known source."""
    import great_expectations as gx

    return run_suite(
        "curated_schema",
        df,
        [
            gx.expectations.ExpectTableColumnsToMatchSet(column_set=CURATED_COLUMNS, exact_match=True),
            gx.expectations.ExpectColumnValuesToBeUnique(column="id"),
            gx.expectations.ExpectColumnValuesToNotBeNull(column="question"),
            gx.expectations.ExpectColumnValuesToNotBeNull(column="answer"),
            gx.expectations.ExpectColumnValueLengthsToBeBetween(column="question", min_value=1),
            gx.expectations.ExpectColumnValuesToBeInSet(column="source", value_set=["feedback", "correction"]),
        ],
    )


def validate_no_pii(df: pd.DataFrame, columns: list[str]) -> SuiteResult:
    """No text column matches a PII pattern, and Presidio finds nothing left in it."""
    import great_expectations as gx

    from ragtune.behaviour.pii import RESIDUE_PATTERNS, find_pii

    frame = df[columns].fillna("").astype(str).copy()
    frame["pii_left"] = [sum(len(find_pii(row[c])) for c in columns) for _, row in frame.iterrows()]
    patterns = list(RESIDUE_PATTERNS.values())
    expectations = [gx.expectations.ExpectColumnValuesToNotMatchRegexList(column=c, regex_list=patterns) for c in columns]
    expectations.append(gx.expectations.ExpectColumnValuesToBeBetween(column="pii_left", min_value=0, max_value=0))
    return run_suite("no_pii_left", frame, expectations)


def validate_not_empty(df: pd.DataFrame, name: str) -> SuiteResult:
    import great_expectations as gx

    return run_suite(name, df, [gx.expectations.ExpectTableRowCountToBeBetween(min_value=1)])


def raft_frame(rows: list[dict]) -> pd.DataFrame:
    """One row per example with what the checks need: text, answer JSON validity, gold/distractor overlap."""
    from ragtune.llm.prompting import parse_answer

    parsed = [parse_answer(r["target"]) for r in rows]
    return pd.DataFrame(
        {
            "id": [r["id"] for r in rows],
            "question": [r["question"] for r in rows],
            "answer": [p["answer"] if p else r["target"] for p, r in zip(parsed, rows)],
            "prompt": [r["prompt"] for r in rows],
            "completion": [r["completion"] for r in rows],
            "target_valid": [p is not None for p in parsed],
            "gold_in_distractors": [bool(set(r["gold_doc_ids"]) & set(r["distractor_doc_ids"])) for r in rows],
        },
        columns=["id", "question", "answer", "prompt", "completion", "target_valid", "gold_in_distractors"],
    )


def validate_raft(df: pd.DataFrame) -> SuiteResult:
    """Examples exist, have a prompt and a completion, targets are valid answer JSON, gold is never a distractor."""
    import great_expectations as gx

    return run_suite(
        "raft_dataset",
        df,
        [
            gx.expectations.ExpectTableRowCountToBeBetween(min_value=1),
            gx.expectations.ExpectColumnValueLengthsToBeBetween(column="prompt", min_value=1),
            gx.expectations.ExpectColumnValueLengthsToBeBetween(column="completion", min_value=1),
            gx.expectations.ExpectColumnValuesToBeInSet(column="target_valid", value_set=[True]),
            gx.expectations.ExpectColumnValuesToBeInSet(column="gold_in_distractors", value_set=[False]),
        ],
    )
