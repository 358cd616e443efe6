"""Release mechanics on a real MLflow registry: the re-check, rejection, a crash mid-move, the retrain sensor.

The end-to-end loop with trained adapters is in test_release_loop.py.
"""

import dagster as dg
import pytest
from conftest import free_port, register_versions, scored_rows

from evaluation.gate import GatePolicy
from evaluation.harness import EvalReport
from evaluation.release import ReleaseError, load_summary, record_evaluation, release_challenger
from evaluation.runner import Evaluation
from ragtune import registry
from ragtune.behaviour.datasets import save_raft
from ragtune.settings import load_settings

GOOD = {
    "identifier_match": 0.6,
    "format_validity": 1.0,
    "citation_accuracy": 0.8,
    "abstention": 0.9,
    "adherence": 0.7,
    "false_abstention": 0.05,
}
WEAK = {
    "identifier_match": 0.3,
    "format_validity": 0.95,
    "citation_accuracy": 0.7,
    "abstention": 0.8,
    "adherence": 0.6,
    "false_abstention": 0.1,
}


def evaluated(settings, version: str, champion: str | None, mine: dict, theirs: dict) -> None:
    """Record an evaluation of `version` (as adapter_evaluation does) and make it the challenger: per-item rows on
    100 items (60 probed) with these means, enough for the default gate to decide."""
    incumbent = "champion_rag" if champion else "base_rag"
    rows = scored_rows("challenger_rag", **mine) + scored_rows(incumbent, **theirs)
    report = EvalReport(
        metrics={incumbent: theirs, "challenger_rag": mine}, retrieval={"recall@3": 1.0, "mrr": 1.0}, rows=rows, items=100
    )
    evaluation = Evaluation(
        report=report, challenger=version, champion=champion, incumbent=incumbent, index_version=3, eval_digest="d"
    )
    run_id = next(
        v["run_id"] for v in registry.list_versions(settings.tracking_uri, settings.registered_model) if v["version"] == version
    )
    record_evaluation(settings.tracking_uri, settings.registered_model, run_id, evaluation)
    registry.set_challenger(settings.tracking_uri, settings.registered_model, version)


def test_release_rechecks_rejects_and_converges_after_a_crash(home, tmp_path, monkeypatch):
    s = load_settings()
    uri, name, policy = s.tracking_uri, s.registered_model, GatePolicy()
    v1, v2, v3 = register_versions(s, ["a", "b", "c"], tmp_path / "adapter")
    with pytest.raises(ReleaseError, match="no challenger alias"):
        release_challenger(uri, name, policy)
    registry.promote(uri, name, v1, reason="first")

    evaluated(s, v2, v1, GOOD, WEAK)
    assert load_summary(uri, name, v2)["metrics"]["challenger_rag"] == GOOD
    tags = next(v["tags"] for v in registry.list_versions(uri, name) if v["version"] == v2)
    assert tags["eval_identifier_match"] == "0.6" and tags["evaluated_against"] == v1

    monkeypatch.setenv("RAGTUNE_FAILPOINT", "promote:between_aliases")
    with pytest.raises(RuntimeError, match="failpoint"):
        release_challenger(uri, name, policy, run_id="run-crashed")
    # the old champion still serves; the challenger is still waiting
    assert registry.aliases(uri, name) == {"champion": v1, "previous_champion": v1, "challenger": v2}
    monkeypatch.delenv("RAGTUNE_FAILPOINT")
    done = release_challenger(uri, name, policy, run_id="run-resumed")
    assert done["released"] and done["previous_champion"] == v1 and done["outcome"] == "passed"
    assert registry.aliases(uri, name) == {"champion": v2, "previous_champion": v1}
    tags = next(v["tags"] for v in registry.list_versions(uri, name) if v["version"] == v2)
    assert tags["gate_verdict"] == "passed" and tags["promoted_run_id"] == "run-resumed"

    evaluated(s, v3, v2, WEAK, GOOD)  # worse than the champion on everything
    outcome = release_challenger(uri, name, policy, run_id="run-3")
    assert not outcome["released"] and outcome["outcome"] == "worse" and outcome["reasons"][0].startswith("FAIL identifier_match")
    assert registry.aliases(uri, name)["champion"] == v2
    tags = next(v["tags"] for v in registry.list_versions(uri, name) if v["version"] == v3)
    assert (
        tags["gate_verdict"] == "rejected"
        and "FAIL identifier_match" in tags["rejected_reason"]
        and tags["gate_outcome"] == "worse"
    )
    assert tags["rejected_run_id"] == "run-3"

    registry.rollback(uri, name, reason="incident")  # the champion moves after v3 was evaluated against v2
    with pytest.raises(ReleaseError, match="champion moved"):
        release_challenger(uri, name, policy)
    assert registry.aliases(uri, name)["champion"] == v1


def test_a_crash_after_the_champion_moved_is_finished_on_rerun(home, tmp_path):
    s = load_settings()
    (v1,) = register_versions(s, ["a"], tmp_path / "adapter")
    evaluated(s, v1, None, GOOD, WEAK)
    registry.promote(s.tracking_uri, s.registered_model, v1, reason="moved by hand")
    registry.set_challenger(s.tracking_uri, s.registered_model, v1)  # as if the crash hit before the challenger alias went
    outcome = release_challenger(s.tracking_uri, s.registered_model, GatePolicy())
    assert outcome["released"] and outcome["resumed"]
    assert registry.aliases(s.tracking_uri, s.registered_model) == {"champion": v1}


def test_curated_volume_sensor_launches_once_per_threshold(home, tmp_path, monkeypatch):
    from pipelines.definitions import build_definitions
    from ragtune.behaviour.interactions import InteractionLog

    monkeypatch.setenv("RAGTUNE_RETRAIN_MIN_INTERACTIONS", "3")
    s = load_settings()
    sensor = build_definitions(s).resolve_sensor_def("curated_volume_sensor")
    log = InteractionLog(s.interactions_db)

    def record(i: int, feedback: str | None) -> dict:
        return {
            "id": f"r{i}",
            "ts": "2026-01-01T00:00:00+00:00",
            "user": "u",
            "question": f"question {i}?",
            "answer": f"answer {i}",
            "citations": [],
            "feedback": feedback,
        }

    log.extend([record(1, "up"), record(2, "up"), record(3, "down"), record(4, None)])
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance)
        skipped = sensor(context)
        assert isinstance(skipped, dg.SkipReason) and "2 new accepted interactions since the base model" in skipped.skip_message
        log.add_feedback("r4", None, "a correction counts as accepted")
        request = sensor(context)
        assert isinstance(request, dg.RunRequest) and request.run_key == "curated-volume-after-base-1"
        assert sensor(context).run_key == request.run_key  # same key: Dagster launches it once
        # a version trained on r1, r2 and r4: nothing new since it
        digest = "f" * 16
        save_raft(s.datasets_dir, digest, {"train": [{"id": "r1"}, {"id": "r2"}], "validation": [{"id": "r4"}]}, {})
        (v1,) = register_versions(s, [digest], tmp_path / "adapter")
        skipped = sensor(context)
        assert isinstance(skipped, dg.SkipReason) and f"0 new accepted interactions since version {v1}" in skipped.skip_message
        log.extend([record(i, "up") for i in range(5, 8)])
        assert sensor(context).run_key == f"curated-volume-after-{v1}-1"
        # the registry cannot be asked: the tick is skipped, never counted as "nothing trained yet"
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        down = build_definitions(load_settings(mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}"))
        skipped = down.resolve_sensor_def("curated_volume_sensor")(context)
        assert isinstance(skipped, dg.SkipReason) and "registry unavailable" in skipped.skip_message
