"""Group `interactions`: the interaction log -> curated interactions, and their checks."""

import dagster as dg
from pydantic import Field

from assets.checks import check_result
from assets.resources import InteractionLogResource
from ragtune.behaviour.curation import CurationPolicy, curate
from ragtune.behaviour.datasets import save_curated
from ragtune.behaviour.pii import residue
from ragtune.quality import curated_frame, validate_curated_schema, validate_no_pii, validate_not_empty

GROUP = "interactions"
DEFAULT_POLICY = CurationPolicy()


class CurationConfig(dg.Config):
    min_question_chars: int = Field(DEFAULT_POLICY.min_question_chars, description="Shorter questions are dropped.")
    min_answer_chars: int = Field(DEFAULT_POLICY.min_answer_chars, description="Shorter answers are dropped.")
    max_question_chars: int = Field(DEFAULT_POLICY.max_question_chars, description="Longer questions are dropped.")
    max_answer_chars: int = Field(DEFAULT_POLICY.max_answer_chars, description="Longer answers are dropped.")
    near_duplicate_threshold: float = Field(
        DEFAULT_POLICY.near_duplicate_threshold, description="MinHash Jaccard above which two questions are one."
    )


@dg.asset(group_name=GROUP, description="Every logged interaction with its newest feedback, forgotten users already erased.")
def interaction_logs(interaction_log: InteractionLogResource) -> dg.Output[list[dict]]:
    records = interaction_log.get().records()
    return dg.Output(
        records,
        metadata={
            "records": len(records),
            "feedback_up": sum(r["feedback"] == "up" for r in records),
            "feedback_down": sum(r["feedback"] == "down" for r in records),
            "corrections": sum(bool(r["correction"]) for r in records),
            "users": len({r["user"] for r in records}),
        },
    )


@dg.asset(group_name=GROUP, description="Approved or corrected interactions, length-filtered, PII-scrubbed, de-duplicated.")
def curated_interactions(
    interaction_logs: list[dict], config: CurationConfig, interaction_log: InteractionLogResource
) -> dg.Output[list[dict]]:
    log = interaction_log.get()
    policy = CurationPolicy(**config.model_dump())
    curated = curate(interaction_logs, log.forgotten(), policy)
    path = save_curated(interaction_log.settings().datasets_dir, curated.records)
    report = curated.report.as_dict()
    return dg.Output(
        curated.records,
        metadata={
            "kept": report["kept"],
            "input": report["input"],
            "dropped": dg.MetadataValue.json(report["dropped"]),
            "redactions": dg.MetadataValue.json(report["redactions"]),
            "quarantined": dg.MetadataValue.json(report["quarantined"]),
            "snapshot": str(path),
        },
    )


@dg.asset_check(asset=curated_interactions, description="Great Expectations: the curated schema, unique ids, a known source.")
def curated_schema_is_valid(curated_interactions: list[dict]) -> dg.AssetCheckResult:
    return check_result(validate_curated_schema(curated_frame(curated_interactions)))


@dg.asset_check(
    asset=curated_interactions,
    blocking=True,
    description="Great Expectations: no PII pattern left; training must not start otherwise.",
)
def curated_has_no_pii(curated_interactions: list[dict]) -> dg.AssetCheckResult:
    """The last line: curation quarantines residue, so this fails only if some still got through; it names them."""
    found = [r["id"] for r in curated_interactions if residue(r["question"]) or residue(r["answer"])]
    return check_result(validate_no_pii(curated_frame(curated_interactions), ["question", "answer"]), records=found)


@dg.asset_check(
    asset=curated_interactions, blocking=True, description="Great Expectations: at least one curated record to train on."
)
def curated_is_not_empty(curated_interactions: list[dict]) -> dg.AssetCheckResult:
    return check_result(validate_not_empty(curated_frame(curated_interactions), "curated_not_empty"))


INTERACTION_ASSETS = [interaction_logs, curated_interactions]
INTERACTION_CHECKS = [curated_schema_is_valid, curated_has_no_pii, curated_is_not_empty]
