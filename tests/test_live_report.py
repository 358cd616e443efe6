"""The live report (evaluation/live_report.py) on constructed records, and `serving_report` materialized for a day.

The embedder is the real bundled MiniLM (loaded once, through the same resource the asset uses); the registry is a
real MLflow store on a temporary data home, its alias moves dated by a fixed clock so they fall on the test's days.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from assets.monitoring import champion_has_not_regressed, serving_report
from assets.resources import EmbedderResource, InteractionLogResource, MLflowResource
from evaluation.intervals import newcombe_independent
from evaluation.live_report import (
    NO_REGRESSION,
    NOT_ENOUGH,
    REGRESSION,
    champion_periods,
    compare_periods,
    coverage_gaps,
    histogram,
    live_report,
    summarise,
)
from ragtune.behaviour.answer_flags import valid_citation
from ragtune.behaviour.interactions import InteractionLog
from ragtune.llm.prompting import NOT_COVERED
from ragtune.settings import load_settings


def record(i: int, **fields) -> dict:
    """A live answer citing the document in its context, with top similarity 0.8 and latency i ms."""
    return {
        "id": f"r{i}",
        "ts": f"2025-03-10T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}+00:00",
        "user": "u",
        "question": f"question {i}",
        "answer": "Use pipeline('sentiment-analysis').",
        "citations": [{"doc_id": "a.md", "chunk_id": "a#0"}],
        "model_version": "2",
        "index_version": "7",
        "latency_ms": float(i),
        "retrieved": [{"doc_id": "a.md", "chunk_id": "a#0", "score": 0.1, "similarity": 0.8}],
        "fallback": False,
        "shadow_of": None,
        "feedback": None,
        **fields,
    }


def test_newcombe_independent_matches_newcombes_published_examples():
    # Newcombe (1998), Statistics in Medicine 17:873, Table II, method 10
    assert [round(v, 4) for v in newcombe_independent(56, 70, 48, 80)] == [0.0524, 0.3339]
    assert [round(v, 4) for v in newcombe_independent(9, 10, 3, 10)] == [0.1705, 0.8090]
    assert [round(v, 4) for v in newcombe_independent(5, 56, 0, 29)] == [-0.0381, 0.1926]
    assert [round(v, 4) for v in newcombe_independent(10, 10, 0, 10)] == [0.6075, 1.0]
    with pytest.raises(ValueError):
        newcombe_independent(3, 2, 0, 1)


def test_rates_citation_validity_percentiles_and_shadow_answers_left_out():
    records = [record(i) for i in range(1, 11)]
    records[0]["feedback"] = "up"
    records[1]["feedback"] = "up"
    records[2]["feedback"] = "down"
    records[3]["fallback"] = True
    records[4]["answer"] = NOT_COVERED
    records[5]["citations"] = []  # no citation
    records[6]["citations"] = [{"doc_id": "a.md"}, {"doc_id": "elsewhere.md"}]  # one outside the context
    records[7]["retrieved"] = [{"doc_id": "a.md", "similarity": 0.1}, {"doc_id": "b.md", "similarity": 0.3}]
    records[8]["retrieved"][0]["similarity"] = None  # similarity not logged
    shadow = record(99, shadow_of="r1", model_version="3", feedback="down")
    report = live_report(records + [shadow], low_similarity=0.35)
    assert report["answers"] == 10 and report["shadow_answers"] == 1
    assert [(v["model_version"], v["index_version"], v["answers"]) for v in report["versions"]] == [("2", "7", 10)]
    s = report["by_model"]["2"]
    assert (s["up_rate"], s["down_rate"], s["fallback_rate"], s["abstention_rate"]) == (0.2, 0.1, 0.1, 0.1)
    assert s["valid_citation_rate"] == 0.8  # r6 cites nothing, r7 cites outside the context
    assert s["latency_p50_ms"] == 5.5 and s["latency_p95_ms"] == pytest.approx(9.55)  # latencies 1..10 ms
    assert s["similarity_missing"] == 1 and s["similarity_p50"] == 0.8 and s["similarity_p10"] == pytest.approx(0.7)
    assert s["similarity_histogram"] == [0, 0, 0, 1, 0, 0, 0, 0, 8, 0]
    assert histogram([-0.2, 1.0, 0.05]) == [2, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    assert valid_citation(record(1)) and not valid_citation(record(1, citations=[]))
    assert "3" not in report["by_model"] and report["gaps"] is None


def test_a_new_floor_moves_neither_compared_rate_only_below_floor():
    answered = [record(i) for i in range(1, 9)] + [record(9, answer=NOT_COVERED, citations=[]), record(10, citations=[])]
    declined = [record(i, answer=NOT_COVERED, citations=[], below_floor=True) for i in range(11, 16)]
    before, after = summarise(answered), summarise(answered + declined)
    for metric in ("abstention_rate", "valid_citation_rate", "fallback_rate"):  # the model was not asked below the floor
        assert after[metric] == before[metric], metric
    assert (before["abstention_rate"], before["valid_citation_rate"]) == (0.1, 0.8)
    assert (before["below_floor_rate"], after["below_floor_rate"]) == (0.0, 5 / 15)


def test_coverage_gaps_cluster_paraphrases_together_largest_first(home):
    embed = EmbedderResource().get().embed
    asked = [
        ("How do I reset my password?", {"answer": NOT_COVERED}),
        ("I forgot my password, how can I change it?", {"feedback": "down"}),
        ("Steps to reset a forgotten password", {"answer": NOT_COVERED}),
        ("How do I reset my password?", {"feedback": "down"}),
        ("How much memory does the H100 GPU have?", {"retrieved": [{"doc_id": "a.md", "similarity": 0.1}]}),
        ("What is the GPU memory of an H100?", {"retrieved": []}),
        ("Which model translates English to French?", {}),  # served well: no gap
    ]
    records = [record(i, question=q, **fields) for i, (q, fields) in enumerate(asked)]
    gaps = coverage_gaps(records, low_similarity=0.35, embed=embed)
    assert gaps["questions"] == 5
    first, second = gaps["clusters"]
    assert first["size"] == 4 and first["questions"] == 3 and first["examples"][0] == "How do I reset my password?"
    assert first["reasons"] == {"abstained": 2, "down": 2}
    assert second["size"] == 2 and set(second["examples"]) == {asked[4][0], asked[5][0]}
    assert second["reasons"] == {"low_retrieval": 2}


def summary(answers: int, down: int) -> dict:
    return summarise([record(i, feedback="down" if i < down else "up") for i in range(answers)])


def test_comparison_finds_a_regression_or_no_regression_or_too_little_evidence():
    worse = compare_periods(summary(60, 30), summary(60, 3), tolerance=0.05, min_answers=30)
    assert worse["verdict"] == REGRESSION and worse["regressions"] == ["up_rate", "down_rate"]
    row = worse["metrics"]["down_rate"]
    assert row["diff"] == pytest.approx(0.45) and row["low"] > 0.05 and row["low"] < row["diff"] < row["high"]
    same = compare_periods(summary(60, 5), summary(60, 3), tolerance=0.05, min_answers=30)
    assert same["verdict"] == NO_REGRESSION and same["regressions"] == []
    assert same["metrics"]["down_rate"]["low"] < 0 < same["metrics"]["down_rate"]["high"]
    few = compare_periods(summary(20, 20), summary(60, 0), tolerance=0.05, min_answers=30)
    assert few["verdict"] == NOT_ENOUGH and few["metrics"] == {}


def test_champion_periods_come_from_the_alias_log():
    history = [
        {"at": "2025-02-01T00:00:00+00:00", "alias": "champion", "from": None, "to": "1"},
        {"at": "2025-03-09T12:00:00+00:00", "alias": "previous_champion", "from": None, "to": "1"},
        {"at": "2025-03-09T12:00:00+00:00", "alias": "champion", "from": "1", "to": "2"},
    ]
    until = datetime(2025, 3, 11, tzinfo=UTC)
    periods = champion_periods(history, until)
    assert (periods["champion"], periods["previous"]) == ("2", "1")
    assert periods["new_period"] == (datetime(2025, 3, 9, 12, tzinfo=UTC), until)
    assert periods["old_period"][1] == datetime(2025, 3, 9, 12, tzinfo=UTC)
    first = champion_periods(history, datetime(2025, 2, 2, tzinfo=UTC))
    assert (first["champion"], first["previous"]) == ("1", "base")
    assert champion_periods(history, datetime(2025, 1, 1, tzinfo=UTC)) is None


class Clock(datetime):
    """datetime whose now() starts at `current` and steps a millisecond a call: alias moves dated on the test's days."""

    current = datetime(2025, 1, 1, tzinfo=UTC)

    @classmethod
    def now(cls, tz=None):
        cls.current += timedelta(milliseconds=1)
        return cls.current


def materialize_day(home, day: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [serving_report, champion_has_not_regressed],
        partition_key=day,
        resources={
            "interaction_log": InteractionLogResource(home=str(home)),
            "mlflow": MLflowResource(home=str(home)),
            "embedder": EmbedderResource(home=str(home)),
        },
    )


def test_serving_report_for_a_day_with_its_metadata_and_the_champion_check(home, tmp_path, monkeypatch):
    from conftest import register_versions

    from ragtune import registry

    s = load_settings()
    log = InteractionLog(s.interactions_db)
    promoted = datetime(2025, 3, 10, 6, tzinfo=UTC)
    before = [  # version 1 the week before: 3 of 40 down-voted
        record(
            i,
            id=f"old{i}",
            model_version="1",
            ts=(promoted - timedelta(days=5, seconds=i)).isoformat(),
            feedback="down" if i < 3 else "up",
        )
        for i in range(40)
    ]
    after = [  # version 2 on 10 March, after its promotion: 24 of 40 down-voted, one shadow answer
        record(i, id=f"new{i}", ts=(promoted + timedelta(minutes=i)).isoformat(), feedback="down" if i < 24 else "up")
        for i in range(40)
    ]
    early = record(0, id="early", model_version="1", ts="2025-03-10T01:00:00+00:00", answer=NOT_COVERED)
    shadow = record(0, id="shadow", model_version="3", ts="2025-03-10T07:00:00+00:00", shadow_of="new0")
    log.extend(before + after + [early, shadow])

    quiet = materialize_day(home, "2025-03-01")  # no answers, no champion: the check passes
    assert quiet.success
    [check] = quiet.get_asset_check_evaluations()
    assert check.passed and "base model serves" in check.description

    v1, v2 = register_versions(s, ["d1", "d2"], tmp_path / "adapter")
    from assets import monitoring

    monkeypatch.setattr(registry, "datetime", Clock)
    monkeypatch.setattr(monitoring, "datetime", Clock)  # "today", for how old a report is
    Clock.current = promoted - timedelta(days=30)
    registry.promote(s.tracking_uri, s.registered_model, v1, "first")
    Clock.current = promoted
    registry.promote(s.tracking_uri, s.registered_model, v2, "second")

    Clock.current = promoted + timedelta(hours=12)  # 18:00 on the 10th: its day has not ended, so it is refused
    with pytest.raises(dg.Failure, match="has not ended"):
        materialize_day(home, "2025-03-10")
    Clock.current = promoted + timedelta(days=1)
    result = materialize_day(home, "2025-03-10")
    assert result.success
    report = result.output_for_node("serving_report")
    assert report["answers"] == 41 and report["shadow_answers"] == 1 and report["champion"] == v2
    [materialization] = result.asset_materializations_for_node("serving_report")
    meta = materialization.metadata
    assert meta["champion"].value == v2 and meta["champion_answers"].value == 40
    assert meta["champion_down_rate"].value == pytest.approx(0.6) and meta["champion_up_rate"].value == pytest.approx(0.4)
    assert meta["champion_latency_p50_ms"].value == pytest.approx(19.5)
    assert "| 2 | 7 | 40 |" in meta["versions"].value and "| 1 | 7 | 1 |" in meta["versions"].value
    assert "question 0" in meta["coverage_gaps"].value  # down-voted and abstained on
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "down_rate" in check.description and "rollback" not in check.metadata
    assert registry.aliases(s.tracking_uri, s.registered_model)["champion"] == v2  # warn only by default

    monkeypatch.setenv("RAGTUNE_MONITOR_AUTO_ROLLBACK", "true")
    Clock.current = promoted + timedelta(days=1)
    rolled = materialize_day(home, "2025-03-10")
    [check] = rolled.get_asset_check_evaluations()
    assert not check.passed and check.metadata["rollback"].value == f"rolled back to version {v1}"
    assert registry.aliases(s.tracking_uri, s.registered_model)["champion"] == v1
    move = [m for m in registry.alias_history(s.tracking_uri, s.registered_model) if m["alias"] == "champion"][-1]
    assert (move["from"], move["to"]) == (v2, v1) and "down_rate" in move["reason"] and "2025-03-10" in move["reason"]

    # two days later version 1 (back by the rollback) does worse than version 2 did: it warns, and never rolls
    # back to a version that was rolled back (no flip-flop)
    worse = [
        record(i, id=f"back{i}", model_version="1", ts=(promoted + timedelta(days=2, minutes=i)).isoformat(), feedback="down")
        for i in range(40)
    ]
    log.extend(worse)
    Clock.current = promoted + timedelta(days=3)  # the 13th: the 12th has ended
    [check] = materialize_day(home, "2025-03-12").get_asset_check_evaluations()
    assert not check.passed and "was rolled back before" in check.metadata["rollback"].value
    assert registry.aliases(s.tracking_uri, s.registered_model)["champion"] == v1

    # a backfill of an old day warns only
    Clock.current = promoted + timedelta(days=9)
    [check] = materialize_day(home, "2025-03-12").get_asset_check_evaluations()
    assert not check.passed and "days old" in check.metadata["rollback"].value
