"""Intervals against references computed by hand, and the release gate: each rule, each way, each outcome."""

import json
import math
import random

import pytest

from conftest import scored_rows
from evaluation.gate import GatePolicy, compare, decide
from evaluation.intervals import mean_interval, paired_difference, wilson
from ragtune.evaluate import verdict_of

# --- intervals ---------------------------------------------------------------------------------------


def test_wilson_matches_the_published_values():
    # 8 of 10: p = 0.8, centre (0.8 + z²/20) / (1 + z²/10) = 0.7167, half-width 0.2266
    assert wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)  # upper = z² / (n + z²)
    assert wilson(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)


def test_mean_interval_chooses_wilson_for_zero_one_values_and_bootstrap_otherwise():
    binary = mean_interval([1.0] * 8 + [0.0] * 2)
    assert (binary.mean, binary.n) == (0.8, 10) and (binary.low, binary.high) == wilson(8, 10)
    graded = mean_interval([0.2, 0.4, 0.6, 0.8] * 10)
    assert graded.mean == pytest.approx(0.5) and graded.low < graded.mean < graded.high and graded.n == 40
    assert mean_interval([]) is None


def test_paired_difference_exact_cases():
    assert paired_difference({}, {"q1": 1.0}) is None  # no pair: not measured
    same = paired_difference({f"q{i}": float(i % 2) for i in range(30)}, {f"q{i}": float(i % 2) for i in range(30)})
    assert (same.diff, same.low, same.high, same.n) == (0.0, 0.0, 0.0, 30)
    # every item gains exactly 0.25: every resample has that mean
    shifted = paired_difference({i: 0.75 for i in range(20)}, {i: 0.5 for i in range(20)})
    assert (shifted.diff, shifted.low, shifted.high) == (0.25, 0.25, 0.25)
    # only the items both were scored on are paired
    partial = paired_difference({"a": 1.0, "b": 1.0, "c": 1.0}, {"a": 0.0, "b": 0.0})
    assert (partial.n, partial.challenger, partial.incumbent, partial.diff) == (2, 1.0, 0.0, 1.0)


def binomial_quantile(n: int, q: float) -> int:
    """The smallest k with P(Binomial(n, 1/2) <= k) >= q."""
    total = 0.0
    for k in range(n + 1):
        total += math.comb(n, k) / 2 ** n
        if total >= q:
            return k
    return n


def test_paired_bootstrap_on_a_symmetric_case_matches_the_exact_resampling_distribution():
    # 50 items won, 50 lost: a resample's mean difference is (2K - 100) / 100 with K ~ Binomial(100, 1/2)
    n = 100
    challenger = {i: float(i < 50) for i in range(n)}
    incumbent = {i: float(i >= 50) for i in range(n)}
    d = paired_difference(challenger, incumbent)
    exact_low = (2 * binomial_quantile(n, 0.025) - n) / n  # -0.2
    exact_high = (2 * binomial_quantile(n, 0.975) - n) / n  # +0.2
    assert d.diff == 0.0 and d.n == n
    assert d.low == pytest.approx(exact_low, abs=0.021) and d.high == pytest.approx(exact_high, abs=0.021)
    assert abs(d.low + d.high) <= 0.021  # symmetric about 0


def test_paired_bootstrap_is_deterministic_whatever_the_item_order():
    keys = [(f"q{i}", "answer") for i in range(80)]
    rng = random.Random(1)
    challenger = {k: float(rng.random() < 0.6) for k in keys}
    incumbent = {k: float(rng.random() < 0.4) for k in keys}
    first = paired_difference(challenger, incumbent)
    shuffled = list(keys)
    random.Random(2).shuffle(shuffled)
    again = paired_difference({k: challenger[k] for k in shuffled}, {k: incumbent[k] for k in reversed(shuffled)})
    assert first == again and first.low < first.diff < first.high


# --- the gate ----------------------------------------------------------------------------------------

SOUND = {"identifier_match": 0.4, "citation_accuracy": 0.6, "false_abstention": 0.1, "format_validity": 0.97,
         "abstention": 0.7, "adherence": 0.6}


def judged(challenger: dict, incumbent: dict, policy: GatePolicy | None = None, n: int = 100, probed: int = 60):
    rows = scored_rows("challenger_rag", n, probed, **{**SOUND, **challenger}) + scored_rows("base_rag", n, probed, **{**SOUND, **incumbent})
    return decide(compare(rows, "challenger_rag", "base_rag"), policy or GatePolicy())


def test_two_identical_candidates_are_never_promoted():
    verdict = judged({}, {})
    assert verdict.outcome == "not_enough_evidence" and not verdict.passed and verdict.interval == [0.0, 0.0]
    assert verdict.reasons[0].startswith("FAIL identifier_match_gold_in_context: 0.400 vs 0.400 (n=100)")
    assert "not shown better by +0.020" in verdict.reasons[0]


def test_a_mean_gain_above_the_margin_is_not_enough_when_the_lower_bound_is_below_it():
    verdict = judged({"identifier_match": 0.45}, {})  # 5 items of 100 won: +0.05, lower bound +0.01
    assert verdict.challenger - verdict.incumbent == pytest.approx(0.05) and verdict.interval[0] < 0.02
    assert verdict.outcome == "not_enough_evidence" and not verdict.passed


def test_a_clearly_better_challenger_on_100_items_passes_and_every_rule_is_listed():
    verdict = judged({"identifier_match": 0.7}, {})
    assert verdict.outcome == "passed" and verdict.passed, verdict.reasons
    assert (verdict.challenger, verdict.incumbent) == (0.7, 0.4) and 0.02 < verdict.interval[0] < 0.3 < verdict.interval[1]
    assert all(r.startswith("ok ") for r in verdict.reasons) and len(verdict.reasons) == 8  # primary, evidence, 5 guards, 1 floor
    assert verdict.reasons[0].startswith("ok identifier_match_gold_in_context") and "lower bound clears +0.020" in verdict.reasons[0]


def test_a_sabotaged_challenger_is_worse():
    verdict = judged({"identifier_match": 0.1, "citation_accuracy": 0.1}, {})
    assert verdict.outcome == "worse" and not verdict.passed and verdict.interval[1] < 0
    assert verdict.reasons[0].startswith("FAIL identifier_match_gold_in_context") and "shown worse" in verdict.reasons[0]
    assert verdict.reasons[1].startswith("FAIL citation_accuracy_gold_in_context")


@pytest.mark.parametrize("guard, change", [
    ("adherence", {"adherence": 0.2}),  # follows the weights over an edited document
    ("abstention", {"abstention": 0.3}),
    ("format_validity", {"format_validity": 0.85}),  # also under the floor
    ("false_abstention_gold_in_context (lower is better)", {"false_abstention": 0.4}),  # a rise is the harm
])
def test_better_on_the_primary_but_significantly_worse_on_a_guard_fails(guard, change):
    verdict = judged({"identifier_match": 0.7, **change}, {})
    assert verdict.outcome == "worse" and not verdict.passed
    assert verdict.reasons[0].startswith(f"FAIL {guard}:") and "shown worse by more than 0.050" in verdict.reasons[0]


def test_a_guard_interval_that_straddles_the_tolerance_passes_listed_as_uncertain():
    verdict = judged({"identifier_match": 0.7, "abstention": 0.65}, {})  # 3 of 60 unanswerable probes lost
    assert verdict.outcome == "passed", verdict.reasons
    uncertain = [r for r in verdict.reasons if r.startswith("uncertain")]
    assert len(uncertain) == 1 and uncertain[0].startswith("uncertain abstention") and "not ruled out" in uncertain[0]
    assert verdict.reasons.index(uncertain[0]) < verdict.reasons.index(next(r for r in verdict.reasons if r.startswith("ok")))


def test_too_few_items_is_not_enough_evidence_even_for_a_winner():
    verdict = judged({"identifier_match": 1.0}, {"identifier_match": 0.0}, n=12, probed=6)
    assert verdict.outcome == "not_enough_evidence" and not verdict.passed
    assert verdict.reasons[0].startswith("FAIL evidence: too few probes compared to decide: 12 answer (needs 100), "
                                         "6 unanswerable (needs 50), 6 counterfactual (needs 50)")
    # the same counts pass a policy sized for them; without the abstention and adherence guards no probe count is needed
    small = GatePolicy(min_items=12, guards=["format_validity"])
    assert judged({"identifier_match": 1.0}, {"identifier_match": 0.0}, small, n=12, probed=0).outcome == "passed"


def test_unmeasured_metrics_fail_their_rule():
    better = {**SOUND, "identifier_match": 0.7}
    rows = scored_rows("challenger_rag", **better) + scored_rows("base_rag", **{k: v for k, v in SOUND.items() if k != "adherence"})
    verdict = decide(compare(rows, "challenger_rag", "base_rag"), GatePolicy())
    assert verdict.outcome == "not_enough_evidence"
    assert verdict.reasons[0] == "FAIL adherence: not measured (no counterfactual probe scored for both candidates)"
    no_gold = [{**r, "retrieved": ["other"]} for r in rows]  # retrieval never served a gold document
    verdict = decide(compare(no_gold, "challenger_rag", "base_rag"), GatePolicy())
    assert verdict.reasons[0].startswith("FAIL identifier_match_gold_in_context: not measured (no answer probe scored for "
                                         "both candidates, with a gold document in the context)")
    assert verdict.interval is None and verdict.challenger == 0.0


def test_the_verdict_is_decided_again_from_the_recorded_summary_alone():
    rows = scored_rows("challenger_rag", **{**SOUND, "identifier_match": 0.7}) + scored_rows("champion_rag", **SOUND)
    comparison = compare(rows, "challenger_rag", "champion_rag")
    recorded = json.loads(json.dumps({"incumbent": "champion_rag", "comparison": comparison}))
    assert verdict_of(recorded, GatePolicy()) == decide(comparison, GatePolicy())
    assert comparison["counts"] == {"answer": 100, "counterfactual": 60, "unanswerable": 60}
    assert set(comparison["metrics"]["identifier_match"]) == {"challenger", "incumbent", "diff", "low", "high", "n"}
    old = verdict_of({"incumbent": "base_rag", "metrics": {}}, GatePolicy())  # recorded before comparisons were kept
    assert old.outcome == "not_enough_evidence" and not old.passed


def test_policy_yaml_loads_and_refuses_unknown_keys_and_metrics(tmp_path):
    policy = GatePolicy.from_yaml()
    assert policy == GatePolicy()  # the file states the defaults
    assert policy.primary_metric == "identifier_match_gold_in_context" and policy.floors == {"format_validity": 0.9}
    assert (policy.min_items, policy.min_probed, policy.tolerance) == (100, 50, 0.05)
    path = tmp_path / "gate.yaml"
    for text, error in [("primary: x\n", "unknown gate settings primary"),
                        ("max_regression: 0.05\n", "unknown gate settings max_regression"),
                        ("guards: {format_validity: 0.9}\n", "guards must be a list"),
                        ("guards: [identifer_match]\n", "unknown metrics identifer_match"),
                        ("floors: {false_abstention: 0.1}\n", "none on lower-is-better false_abstention"),
                        ("min_items: -1\n", "cannot be negative")]:
        path.write_text(text)
        with pytest.raises(ValueError, match=error):
            GatePolicy.from_yaml(path)
