"""How every stage turns a Great Expectations suite result into a Dagster asset check result."""

import dagster as dg

from ragtune.quality import SuiteResult


def check_result(result: SuiteResult, records: list[str] | None = None) -> dg.AssetCheckResult:
    """`records`: the ids of the rows that fail, named in the description (the first 20) and the metadata."""
    description = result.describe()
    if records:
        description += f"; records: {', '.join(records[:20])}" + (f" and {len(records) - 20} more" if len(records) > 20 else "")
    return dg.AssetCheckResult(
        passed=result.success and not records,
        description=description,
        metadata={
            "rows": result.rows,
            "failures": dg.MetadataValue.json(result.failures),
            "failing_records": dg.MetadataValue.json(records or []),
        },
    )
