"""Intervals against references computed by hand, and the release gate: each rule, each way, each outcome."""

import json
import math
import random
from dataclasses import asdict

import pytest
from conftest import scored_rows

from evaluation.gate import DEFAULT_GATE, GatePolicy, compare, decide
from evaluation.intervals import Z95, mean_interval, newcombe_paired, paired_difference, wilson
from evaluation.runner import verdict_of

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


def test_newcombe_paired_matches_the_published_example():
    # Cavo et al. (2012), as analysed by Fagerland, Lydersen & Laake (2014, Statistics in Medicine 33:2850):
    # a, b, c, d = 59, 6, 16, 80; Newcombe square-and-add (Newcombe 1998, method 10): -0.0621 (-0.1186 to -0.0046).
    # Here ad - bc = 4624 > n/2, so Newcombe's corrected phi = (4624 - 80.5) / sqrt(65 * 96 * 75 * 86) is used.
    assert newcombe_paired(59, 6, 16, 80) == pytest.approx((-0.1186, -0.0046), abs=1e-4)
    assert (6 - 16) / 161 == pytest.approx(-0.0621, abs=1e-4)


def test_newcombe_paired_by_hand_where_phi_is_zero():
    # 4 won, 0 lost, 26 both wrong of 30 (ad - bc = 0: phi = 0). p1 = 4/30, p2 = 0.
    z2 = Z95**2
    centre, half = (4 / 30 + z2 / 60) / (1 + z2 / 30), Z95 * math.sqrt((4 / 30) * (26 / 30) / 30 + z2 / 3600) / (1 + z2 / 30)
    l1, u1 = centre - half, centre + half  # Wilson for 4 of 30: 0.0531, 0.2968
    u2 = z2 / (30 + z2)  # Wilson's upper bound for 0 of 30: 0.1135 (its lower bound is 0 = p2)
    assert (l1, u1, u2) == pytest.approx((0.0531, 0.2968, 0.1135), abs=1e-4)
    low = 4 / 30 - math.sqrt((4 / 30 - l1) ** 2 + u2**2)  # 0.1333 - sqrt(0.0802² + 0.1135²) = -0.0056
    high = 4 / 30 + (u1 - 4 / 30)  # p2 - l2 = 0: only the challenger's upper side = 0.2968
    assert newcombe_paired(0, 4, 0, 26) == pytest.approx((low, high), abs=1e-12)
    assert (low, high) == pytest.approx((-0.0056, 0.2968), abs=1e-4)


def test_newcombe_paired_is_antisymmetric_and_a_proper_interval_at_no_discordant_pair():
    for a, b, c, d in [(12, 4, 0, 14), (8, 12, 1, 9), (3, 2, 9, 16), (0, 0, 0, 5), (40, 30, 0, 30)]:
        low, high = newcombe_paired(a, b, c, d)
        assert low <= (b - c) / (a + b + c + d) <= high and -1 <= low and high <= 1
        assert newcombe_paired(a, c, b, d) == pytest.approx((-high, -low), abs=1e-12)  # swap the candidates
    low, high = newcombe_paired(15, 0, 0, 15)  # identical candidates: 0 is inside, yet the interval is not [0, 0]
    assert low == pytest.approx(-high) and -0.07 < low < -0.05
    with pytest.raises(ValueError, match="at least one pair"):
        newcombe_paired(0, 0, 0, 0)


def sign_test(won: int, lost: int) -> float:
    """The exact two-sided sign test (McNemar's exact conditional test) on the discordant pairs."""
    m, k = won + lost, min(won, lost)
    return min(1.0, 2 * sum(math.comb(m, i) for i in range(k + 1)) / 2**m)


@pytest.mark.parametrize("n", [20, 30, 40])
def test_four_won_none_lost_does_not_clear_the_margin_whatever_the_concordant_items(n):
    assert sign_test(4, 0) == 0.125
    for both in range(n - 4 + 1):  # every split of the n - 4 concordant items into both-right and both-wrong
        low, _ = newcombe_paired(both, 4, 0, n - 4 - both)
        assert low < 0.02, (n, both, low)


def test_twelve_won_one_lost_of_thirty_clears_the_margin_whatever_the_concordant_items():
    assert sign_test(12, 1) < 0.01
    for both in range(30 - 13 + 1):
        low, _ = newcombe_paired(both, 12, 1, 30 - 13 - both)
        assert low > 0.1, (both, low)


def test_paired_difference_exact_cases():
    assert paired_difference({}, {"q1": 1.0}) is None  # no pair: not measured
    same = paired_difference({f"q{i}": float(i % 2) for i in range(30)}, {f"q{i}": float(i % 2) for i in range(30)})
    assert (same.diff, same.n, same.method) == (0.0, 30, "newcombe") and (same.low, same.high) == newcombe_paired(15, 0, 0, 15)
    # every item gains exactly 0.25: graded values, the bootstrap; every resample has that mean
    shifted = paired_difference({i: 0.75 for i in range(20)}, {i: 0.5 for i in range(20)})
    assert (shifted.diff, shifted.low, shifted.high, shifted.method) == (0.25, 0.25, 0.25, "bootstrap")
    # only the items both were scored on are paired
    partial = paired_difference({"a": 1.0, "b": 1.0, "c": 1.0}, {"a": 0.0, "b": 0.0})
    assert (partial.n, partial.challenger, partial.incumbent, partial.diff) == (2, 1.0, 0.0, 1.0)
    assert (partial.low, partial.high) == newcombe_paired(0, 2, 0, 0)
    # 0/1 values: the table is counted from the pairs (a = both 1, b = won, c = lost, d = both 0)
    won = {i: float(i < 16) for i in range(30)}
    base = {i: float(i < 12 or i == 29) for i in range(30)}  # a = 12, b = 4, c = 1, d = 13
    d = paired_difference(won, base)
    assert d.method == "newcombe" and (d.low, d.high) == newcombe_paired(12, 4, 1, 13) and d.diff == pytest.approx(3 / 30)
    assert d.as_dict()["method"] == "newcombe"


def binomial_quantile(n: int, q: float) -> int:
    """The smallest k with P(Binomial(n, 1/2) <= k) >= q."""
    total = 0.0
    for k in range(n + 1):
        total += math.comb(n, k) / 2**n
        if total >= q:
            return k
    return n


def test_paired_bootstrap_on_a_symmetric_case_matches_the_exact_resampling_distribution():
    # graded values (token F1, say): 50 items gain 0.5, 50 lose 0.5; a resample's mean difference is
    # 0.5 (2K - 100) / 100 with K ~ Binomial(100, 1/2)
    n = 100
    challenger = {i: 0.5 if i < 50 else 0.0 for i in range(n)}
    incumbent = {i: 0.0 if i < 50 else 0.5 for i in range(n)}
    d = paired_difference(challenger, incumbent)
    exact_low = 0.5 * (2 * binomial_quantile(n, 0.025) - n) / n  # -0.1
    exact_high = 0.5 * (2 * binomial_quantile(n, 0.975) - n) / n  # +0.1
    assert d.diff == 0.0 and d.n == n and d.method == "bootstrap"
    assert d.low == pytest.approx(exact_low, abs=0.011) and d.high == pytest.approx(exact_high, abs=0.011)
    assert abs(d.low + d.high) <= 0.011  # symmetric about 0


def test_paired_bootstrap_is_deterministic_whatever_the_item_order():
    keys = [(f"q{i}", "answer") for i in range(80)]
    rng = random.Random(1)
    challenger = {k: rng.random() for k in keys}  # graded: the bootstrap, whose resamples depend on the order
    incumbent = {k: rng.random() * 0.8 for k in keys}
    first = paired_difference(challenger, incumbent)
    shuffled = list(keys)
    random.Random(2).shuffle(shuffled)
    again = paired_difference({k: challenger[k] for k in shuffled}, {k: incumbent[k] for k in reversed(shuffled)})
    assert first == again and first.low < first.diff < first.high and first.method == "bootstrap"


# --- the gate ----------------------------------------------------------------------------------------

SOUND = {
    "identifier_match": 0.4,
    "citation_accuracy": 0.6,
    "false_abstention": 0.1,
    "format_validity": 0.97,
    "abstention": 0.7,
    "adherence": 0.6,
}


def judged(challenger: dict, incumbent: dict, policy: GatePolicy | None = None, n: int = 100, probed: int = 60):
    rows = scored_rows("challenger_rag", n, probed, **{**SOUND, **challenger}) + scored_rows(
        "base_rag", n, probed, **{**SOUND, **incumbent}
    )
    return decide(compare(rows, "challenger_rag", "base_rag"), policy or GatePolicy())


def test_two_identical_candidates_are_never_promoted():
    verdict = judged({}, {})
    assert verdict.outcome == "not_enough_evidence" and not verdict.passed
    assert verdict.interval[0] == -verdict.interval[1] and -0.05 < verdict.interval[0] < 0  # no discordant item of 100
    assert verdict.reasons[0].startswith("FAIL identifier_match_gold_in_context: 0.400 vs 0.400 (n=100)")
    assert "not shown better by +0.020" in verdict.reasons[0]


def test_a_mean_gain_above_the_margin_is_not_enough_when_the_lower_bound_is_below_it():
    verdict = judged({"identifier_match": 0.45}, {})  # 5 items of 100 won: +0.05, lower bound +0.003
    assert verdict.challenger - verdict.incumbent == pytest.approx(0.05) and verdict.interval[0] < 0.02
    assert verdict.outcome == "not_enough_evidence" and not verdict.passed


def test_a_clearly_better_challenger_on_100_items_passes_and_every_rule_is_listed():
    verdict = judged({"identifier_match": 0.7}, {})
    assert verdict.outcome == "passed" and verdict.passed, verdict.reasons
    assert (verdict.challenger, verdict.incumbent) == (0.7, 0.4) and 0.02 < verdict.interval[0] < 0.3 < verdict.interval[1]
    assert all(r.startswith("ok ") for r in verdict.reasons) and len(verdict.reasons) == 8  # primary, evidence, 5 guards, 1 floor
    assert (
        verdict.reasons[0].startswith("ok identifier_match_gold_in_context") and "lower bound clears +0.020" in verdict.reasons[0]
    )


def test_a_sabotaged_challenger_is_worse():
    verdict = judged({"identifier_match": 0.1, "citation_accuracy": 0.1}, {})
    assert verdict.outcome == "worse" and not verdict.passed and verdict.interval[1] < 0
    assert verdict.reasons[0].startswith("FAIL identifier_match_gold_in_context") and "shown worse" in verdict.reasons[0]
    assert verdict.reasons[1].startswith("FAIL citation_accuracy_gold_in_context")


@pytest.mark.parametrize(
    "guard, change",
    [
        ("adherence", {"adherence": 0.2}),  # follows the weights over an edited document
        ("abstain_decision", {"abstention": 0.3}),  # stops abstaining where it should
        ("format_validity", {"format_validity": 0.85}),  # also under the floor
        ("false_abstention_gold_in_context (lower is better)", {"false_abstention": 0.4}),  # a rise is the harm
    ],
)
def test_better_on_the_primary_but_significantly_worse_on_a_guard_fails(guard, change):
    verdict = judged({"identifier_match": 0.7, **change}, {})
    assert verdict.outcome == "worse" and not verdict.passed
    failed = next(r for r in verdict.reasons if r.startswith(f"FAIL {guard}:"))
    assert verdict.reasons.index(failed) < verdict.reasons.index(next(r for r in verdict.reasons if r.startswith("ok")))
    assert "shown worse by more than 0.050" in failed


def test_abstaining_on_everything_does_not_win_the_abstention_guard():
    """An indiscriminate abstainer scores on unanswerable probes and loses as much on answerable ones."""
    verdict = judged(
        {"identifier_match": 0.7, "abstention": 0.0, "false_abstention": 0.0}, {"abstention": 0.4, "false_abstention": 0.4}
    )  # the incumbent abstains 40% everywhere
    decision = next(r for r in verdict.reasons if "abstain_decision" in r)
    assert not decision.startswith("FAIL") and verdict.passed, verdict.reasons


def test_a_guard_interval_that_straddles_the_tolerance_passes_listed_as_uncertain():
    verdict = judged({"identifier_match": 0.7, "abstention": 0.6}, {})  # 6 of 160 abstain decisions lost
    assert verdict.outcome == "passed", verdict.reasons
    uncertain = [r for r in verdict.reasons if r.startswith("uncertain")]
    assert len(uncertain) == 1 and uncertain[0].startswith("uncertain abstain_decision") and "not ruled out" in uncertain[0]
    assert verdict.reasons.index(uncertain[0]) < verdict.reasons.index(next(r for r in verdict.reasons if r.startswith("ok")))


def test_too_few_items_is_not_enough_evidence_even_for_a_winner():
    verdict = judged({"identifier_match": 1.0}, {"identifier_match": 0.0}, n=12, probed=6)
    assert verdict.outcome == "not_enough_evidence" and not verdict.passed
    assert verdict.reasons[0] == (
        "FAIL evidence: too few items compared to decide: 12 answer (needs 100) on 12 gold "
        "documents, 6 unanswerable (needs 50), 6 counterfactual (needs 20); "
        "identifier_match_gold_in_context paired on 12 items (needs 30)"
    )
    # the same counts pass a policy sized for them; without the abstention and adherence guards no probe count is needed
    small = GatePolicy(min_items=12, min_primary_items=12, guards=["format_validity"])
    assert judged({"identifier_match": 1.0}, {"identifier_match": 0.0}, small, n=12, probed=0).outcome == "passed"
    assert (
        judged(
            {"identifier_match": 1.0},
            {"identifier_match": 0.0},
            GatePolicy(min_items=12, guards=["format_validity"]),
            n=12,
            probed=0,
        ).outcome
        == "not_enough_evidence"
    )  # the primary's own 12 items are under 30


def test_counterfactual_probes_have_a_minimum_of_their_own():
    # 60 items probed, 20 of them with an identifier to edit (as on APIBench, where most ids cannot be edited)
    rows = [
        r
        for r in scored_rows("challenger_rag", 100, 60, **{**SOUND, "identifier_match": 0.7})
        + scored_rows("base_rag", 100, 60, **SOUND)
        if r["kind"] != "counterfactual" or int(r["item_id"][1:]) < 20
    ]
    comparison = compare(rows, "challenger_rag", "base_rag")
    assert comparison["counts"] == {"answer": 100, "counterfactual": 20, "unanswerable": 60}
    assert comparison["documents"] == 100  # each item asks about its own document
    assert decide(comparison, GatePolicy()).outcome == "passed"
    short = decide(comparison, GatePolicy(min_counterfactual=21))
    assert short.outcome == "not_enough_evidence" and "20 counterfactual (needs 21)" in short.reasons[0]


def with_gold_served(rows: list[dict], served: range) -> list[dict]:
    """The rows with the gold document retrieved only for the answer probes q<i>, i in `served`."""
    return [{**r, "retrieved": ["other"]} if r["kind"] == "answer" and int(r["item_id"][1:]) not in served else r for r in rows]


def test_the_primary_metric_needs_its_own_items_not_only_answer_probes():
    # 100 answer probes, but the gold document was served for 25 (q40-q64, all won by the challenger: 0.7 vs 0.4):
    # the primary (gold in context) is paired on 25
    rows = scored_rows("challenger_rag", **{**SOUND, "identifier_match": 0.7}) + scored_rows("base_rag", **SOUND)
    comparison = compare(with_gold_served(rows, range(40, 65)), "challenger_rag", "base_rag")
    assert comparison["counts"]["answer"] == 100 and comparison["metrics"]["identifier_match_gold_in_context"]["n"] == 25
    verdict = decide(comparison, GatePolicy())
    assert verdict.outcome == "not_enough_evidence" and not verdict.passed
    evidence = next(r for r in verdict.reasons if "evidence" in r)
    assert evidence.startswith("FAIL evidence: too few items compared to decide: 100 answer (needs 100) on 100 gold documents")
    assert evidence.endswith("identifier_match_gold_in_context paired on 25 items (needs 30)")
    assert decide(comparison, GatePolicy(min_primary_items=25)).outcome == "passed"  # 25 won, none lost: clear


def test_items_whose_identifier_the_context_does_not_tell_apart_leave_the_primary():
    # 100 answer probes with the gold document served; on 70 of them another served document holds the same
    # identifier (every AutoTrain model loads 'model.joblib'): the challenger's wins there show nothing
    rows = scored_rows("challenger_rag", **{**SOUND, "identifier_match": 0.7}) + scored_rows("base_rag", **SOUND)
    shared = [{**r, "identifier_shown": float(int(r["item_id"][1:]) >= 70)} if r["kind"] == "answer" else r for r in rows]
    comparison = compare(shared, "challenger_rag", "base_rag")
    assert comparison["metrics"]["identifier_match_gold_in_context"]["n"] == 30
    assert comparison["metrics"]["identifier_match"]["n"] == 100  # the overall figure still counts every item
    assert comparison["metrics"]["citation_accuracy_gold_in_context"]["n"] == 100


def outcomes(won: int, lost: int, both: int, n: int) -> tuple[list[float], list[float]]:
    """Per-item 0/1 values of two candidates: `both` right for both, then `won` by the first, `lost`, the rest wrong."""
    first = [1.0] * both + [1.0] * won + [0.0] * lost + [0.0] * (n - both - won - lost)
    second = [1.0] * both + [0.0] * won + [1.0] * lost + [0.0] * (n - both - won - lost)
    return first, second


def judged_on(won: int, lost: int, both: int, n: int = 30):
    """The gate on n answer probes whose identifier match is given item by item, every other metric equal."""
    policy = GatePolicy(min_items=n, min_primary_items=n, guards=["format_validity"])
    challenger, incumbent = outcomes(won, lost, both, n)
    rows = []
    for name, values in (("challenger_rag", challenger), ("base_rag", incumbent)):
        rows += [
            {**r, "identifier_match": values[int(r["item_id"][1:])]} if r["kind"] == "answer" else r
            for r in scored_rows(name, n, 0, format_validity=1.0)
        ]
    return decide(compare(rows, "challenger_rag", "base_rag"), policy)


@pytest.mark.parametrize("both", [0, 8, 13, 26])
def test_four_won_none_lost_of_thirty_is_not_enough_evidence(both):
    # the paired bootstrap gave a lower bound of +0.033 here and passed; the exact sign test gives p = 0.125
    verdict = judged_on(4, 0, both)
    assert verdict.challenger - verdict.incumbent == pytest.approx(4 / 30, abs=1e-4)  # means as recorded, to 4 places
    assert verdict.outcome == "not_enough_evidence" and not verdict.passed and verdict.interval[0] < 0.02
    assert "not shown better by +0.020" in verdict.reasons[0]


@pytest.mark.parametrize("both", [0, 8, 17])
def test_twelve_won_one_lost_of_thirty_passes(both):
    verdict = judged_on(12, 1, both)
    assert verdict.outcome == "passed" and verdict.passed, verdict.reasons
    assert verdict.interval == pytest.approx(list(newcombe_paired(both, 12, 1, 30 - 13 - both)), abs=1e-4)


def test_repeated_item_ids_are_paired_in_order_of_occurrence_and_reported():
    rows = scored_rows("challenger_rag", **{**SOUND, "identifier_match": 0.7}) + scored_rows("base_rag", **SOUND)
    again = [{**r, "item_id": "q0"} for r in rows if r["kind"] == "answer" and r["item_id"] in ("q1", "q2")]
    comparison = compare(rows + again, "challenger_rag", "base_rag")
    # 102 answer rows each: the two extra rows of q0 are paired with each other, not folded into q0
    assert comparison["counts"]["answer"] == 102 and comparison["metrics"]["identifier_match"]["n"] == 102
    assert comparison["duplicates"] == {"answer": ["q0"]}
    verdict = decide(comparison, GatePolicy())
    evidence = next(r for r in verdict.reasons if "evidence" in r)
    assert evidence.endswith("repeated item ids paired in order of occurrence: 1 answer (q0)")
    assert "duplicates" not in compare(rows, "challenger_rag", "base_rag")


def test_unmeasured_metrics_fail_their_rule():
    better = {**SOUND, "identifier_match": 0.7}
    rows = scored_rows("challenger_rag", **better) + scored_rows(
        "base_rag", **{k: v for k, v in SOUND.items() if k != "adherence"}
    )
    verdict = decide(compare(rows, "challenger_rag", "base_rag"), GatePolicy())
    assert verdict.outcome == "not_enough_evidence"
    assert verdict.reasons[0] == "FAIL adherence: not measured (no counterfactual probe scored for both candidates)"
    no_gold = [{**r, "retrieved": ["other"]} for r in rows]  # retrieval never served a gold document
    verdict = decide(compare(no_gold, "challenger_rag", "base_rag"), GatePolicy())
    assert verdict.reasons[0].startswith(
        "FAIL identifier_match_gold_in_context: not measured (no answer probe scored for "
        "both candidates, with a gold document in the context)"
    )
    assert verdict.interval is None and verdict.challenger == 0.0


def test_the_verdict_is_decided_again_from_the_recorded_summary_alone():
    rows = scored_rows("challenger_rag", **{**SOUND, "identifier_match": 0.7}) + scored_rows("champion_rag", **SOUND)
    comparison = compare(rows, "challenger_rag", "champion_rag")
    recorded = json.loads(json.dumps({"incumbent": "champion_rag", "comparison": comparison}))
    assert verdict_of(recorded, GatePolicy()) == decide(comparison, GatePolicy())
    assert comparison["counts"] == {"answer": 100, "counterfactual": 60, "unanswerable": 60}
    assert set(comparison["metrics"]["identifier_match"]) == {"challenger", "incumbent", "diff", "low", "high", "n", "method"}
    old = verdict_of({"incumbent": "base_rag", "metrics": {}}, GatePolicy())  # recorded before comparisons were kept
    assert old.outcome == "not_enough_evidence" and not old.passed


def test_policy_yaml_loads_and_refuses_unknown_keys_and_metrics(tmp_path):
    policy = GatePolicy.from_yaml()
    assert policy == GatePolicy()  # the file states the defaults
    assert policy.primary_metric == "identifier_match_gold_in_context" and policy.floors == {"format_validity": 0.9}
    assert (policy.min_items, policy.min_probed, policy.min_primary_items, policy.tolerance) == (100, 50, 30, 0.05)
    demo = GatePolicy.from_yaml(DEFAULT_GATE.with_name("gate-demo.yaml"))
    assert (demo.min_items, demo.min_probed, demo.min_counterfactual, demo.min_primary_items) == (30, 12, 12, 20)
    assert policy.min_counterfactual == 20
    counts = {"min_items": 0, "min_probed": 0, "min_counterfactual": 0, "min_primary_items": 0}
    assert {**asdict(demo), **counts} == {**asdict(policy), **counts}  # the demo's gate differs only in its counts
    path = tmp_path / "gate.yaml"
    for text, error in [
        ("primary: x\n", "unknown gate settings primary"),
        ("max_regression: 0.05\n", "unknown gate settings max_regression"),
        ("guards: {format_validity: 0.9}\n", "guards must be a list"),
        ("guards: [identifer_match]\n", "unknown metrics identifer_match"),
        ("floors: {false_abstention: 0.1}\n", "none on lower-is-better false_abstention"),
        ("min_items: -1\n", "min_items = -1: cannot be negative"),
        ("min_improvement: -0.01\n", "min_improvement = -0.01: cannot be negative"),
        ("tolerance: -0.05\n", "tolerance = -0.05: cannot be negative"),
        ("min_primary_items: -5\n", "min_primary_items = -5: cannot be negative"),
        ("min_counterfactual: -1\n", "min_counterfactual = -1: cannot be negative"),
        ("min_improvement: two points\n", "min_improvement must be numbers"),
    ]:
        path.write_text(text)
        with pytest.raises(ValueError, match=error):
            GatePolicy.from_yaml(path)
