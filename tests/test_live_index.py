"""The live index pointer and the embedder gate, on their own (no model, no table)."""

import json

import pytest

from evaluation.embedder_gate import EmbedderGatePolicy, compare_retrieval, decide_retrieval
from ragtune.knowledge.live_index import (
    BASE,
    EmbedderMismatch,
    LiveIndex,
    check_embedder,
    pointer_path,
    read_live,
    read_previous,
    record_fingerprint,
    switch_live,
)
from ragtune.settings import load_settings


def test_without_a_pointer_the_configured_table_and_embedder_are_live(home):
    settings = load_settings()
    live = read_live(settings)
    assert (live.table, live.embedder_version, live.fingerprint) == ("chunks", BASE, "")
    assert live.embedder_path == settings.embedder_path() and live.label(4) == "4"
    check_embedder(live, "anything", "/some/path")  # no fingerprint recorded yet: nothing to contradict


def test_the_first_refresh_ties_the_table_to_its_embedder_and_another_is_refused(home):
    settings = load_settings()
    assert record_fingerprint(settings, "aaaa").fingerprint == "aaaa"
    assert record_fingerprint(settings, "bbbb").fingerprint == "aaaa"  # recorded once, never overwritten
    with pytest.raises(EmbedderMismatch, match="cannot be mixed"):
        check_embedder(read_live(settings), "bbbb", "/other")
    check_embedder(read_live(settings), "aaaa", "/same")


def test_a_switch_is_one_replace_keeps_the_previous_table_and_rolls_back(home):
    settings = load_settings()
    record_fingerprint(settings, "aaaa")
    with pytest.raises(ValueError, match="no earlier live index"):
        read_previous(settings)
    tuned = settings.home_dir / "embedders" / "v3-abc"
    switched = switch_live(settings, LiveIndex("chunks__embedder_3", str(tuned), "3", "cccc"), reason="gate passed")
    assert switched["previous"]["table"] == "chunks" and read_live(settings).label(12) == "12@embedder-3"
    assert read_live(settings).embedder_path == str(tuned)
    pointer = json.loads(pointer_path(settings).read_text())
    assert pointer["history"][-1]["from_table"] == "chunks" and pointer["history"][-1]["reason"] == "gate passed"
    # no machine-specific path is stored: the data home may move, the bundled embedder lives in the venv
    assert pointer["live"]["embedder_path"] == "embedders/v3-abc" and pointer["previous"]["embedder_path"] == ""
    assert not list(pointer_path(settings).parent.glob("*.tmp"))  # the temporary file was renamed over the pointer
    back = switch_live(settings, read_previous(settings), "worse search")
    assert back["live"]["table"] == "chunks" and back["live"]["fingerprint"] == "aaaa"
    assert back["live"]["embedder_path"] == settings.embedder_path()
    assert read_live(settings).table == "chunks" and len(json.loads(pointer_path(settings).read_text())["history"]) == 2


def rows(values: list[float], mrr: list[float] | None = None) -> list[dict]:
    return [{"item_id": str(i), "recall@5": v, "mrr": (mrr or values)[i]} for i, v in enumerate(values)]


def test_the_embedder_gate_needs_a_shown_gain_on_enough_items():
    policy = EmbedderGatePolicy(min_items=50)
    before = rows([1.0] * 30 + [0.0] * 30)
    better = rows([1.0] * 50 + [0.0] * 10)
    verdict = decide_retrieval(compare_retrieval(better, before), policy)
    assert verdict.passed and verdict.interval[0] > 0 and verdict.primary_metric == "recall@5"
    assert decide_retrieval(compare_retrieval(before, before), policy).outcome == "not_enough_evidence"
    worse = decide_retrieval(compare_retrieval(before, better), policy)
    assert worse.outcome == "worse" and worse.reasons[0].startswith("FAIL recall@5")
    few = decide_retrieval(compare_retrieval(better[:20], before[:20]), policy)
    assert few.outcome == "not_enough_evidence" and any("20 held-out items compared (needs 50)" in r for r in few.reasons)
    # recall up, but documents found later in the list: MRR shown worse beyond the tolerance fails the guard
    lower_rank = rows([1.0] * 50 + [0.0] * 10, mrr=[0.2] * 50 + [0.0] * 10)
    guarded = decide_retrieval(compare_retrieval(lower_rank, before), policy)
    assert guarded.outcome == "worse" and any(r.startswith("FAIL mrr") for r in guarded.reasons)
