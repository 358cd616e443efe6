"""How every stage turns a Great Expectations suite result into a Dagster asset check result."""

import dagster as dg

from ragtune.quality import SuiteResult


def check_result(result: SuiteResult) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=result.success,
        description=result.describe(),
        metadata={"rows": result.rows, "failures": dg.MetadataValue.json(result.failures)},
    )
