"""The release gate: is a challenger adapter shown to be better than what users get today?

    comparison = compare(report.rows, "challenger_rag", "champion_rag")  # at evaluation time, kept in the summary
    verdict = decide(comparison, GatePolicy.from_yaml())                 # then, or later from the summary alone
    verdict.outcome, verdict.passed, verdict.reasons

The incumbent is the champion, or the base model when there is no champion yet. `compare` pairs the
two candidates' per-item rows by (item_id, kind) and gives each metric's means, mean difference and
its 95% interval (evaluation/intervals.py: Newcombe's paired interval for 0/1 metrics, the bootstrap
for graded ones); `decide` is pure and reads nothing else, so the release step re-judges the recorded
summary and reaches the same verdict. An item id that occurs more than once for a kind (an evaluation
set with repeated ids) is paired by order of occurrence: both candidates answer the same probe list in
the same order; the comparison lists such ids under `duplicates` and the evidence reason names them.
The rules:

- evidence: at least `min_items` answer items compared, the probes the guards read (`min_probed`
  unanswerable ones for abstention, `min_counterfactual` for adherence), and the primary metric itself
  paired on at least `min_primary_items` items (a `_gold_in_context` metric is computed only on the
  answer probes whose gold document was retrieved, and identifier match only where its identifier is
  also told apart there, which can be far fewer); fewer: not enough evidence.
- primary: passes only when the interval's lower bound of the gain clears `min_improvement`
  (strictly); shown worse when the whole interval is below 0.
- each guard: worse when the whole interval shows a drop beyond `tolerance`; passes, listed as
  uncertain, when the interval merely reaches past it (the primary rule carries the burden of proof).
- each floor: the challenger's mean must reach it (only for metrics any candidate can reach).
A metric that is not measured for both candidates fails its rule: unmeasured is not safe. For a
lower-is-better metric (false abstention) the gain is the difference with its sign turned.

outcome: `worse` when a rule shows harm (primary or a guard worse, a floor missed) on enough items;
`not_enough_evidence` when too few items were compared or the primary is not shown better;
`passed` when every rule holds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from evaluation.harness import CONDITIONAL, item_metrics
from evaluation.intervals import METHOD, paired_difference

DEFAULT_GATE = Path(__file__).with_name("gate.yaml")
COMPARED = (
    "identifier_match",
    "exact_match",
    "token_f1",
    "format_validity",
    "format_validity_unconstrained",
    "citation_accuracy",
    "abstention",
    "abstention_by_model",  # paired where both left the probe to the model (no floor declined it)
    "abstain_decision",
    "adherence",
    "false_abstention",
    *(f"{key}_gold_in_context" for key in CONDITIONAL),
)
LOWER_IS_BETTER = {"false_abstention", "false_abstention_gold_in_context"}
PROBE_KIND = {
    "abstention": "unanswerable",
    "abstention_by_model": "unanswerable",
    "abstain_decision": "unanswerable",  # other metrics: answer probes
    "adherence": "counterfactual",
}
OUTCOMES = ("passed", "worse", "not_enough_evidence")


@dataclass
class GatePolicy:
    primary_metric: str = "identifier_match_gold_in_context"
    min_improvement: float = 0.02  # the gain's 95% lower bound must exceed this (>= 0: a release must not be allowed a loss)
    tolerance: float = 0.05  # a guard fails when its whole interval is a loss larger than this (>= 0)
    guards: list[str] = field(
        default_factory=lambda: [
            "format_validity",
            "citation_accuracy_gold_in_context",
            "abstain_decision",
            "adherence",
            "false_abstention_gold_in_context",
        ]
    )
    floors: dict[str, float] = field(default_factory=lambda: {"format_validity": 0.9})
    min_items: int = 100  # answer items compared before the gate decides
    min_probed: int = 50  # unanswerable probes compared, for the guards that read them
    min_primary_items: int = 30  # items the primary metric itself was paired on (its own n)
    # counterfactual probes compared, for the adherence guard: only probed items with an identifier to
    # edit get one (21 of 50 on APIBench HuggingFace), so it is a minimum of its own
    min_counterfactual: int = 20

    @property
    def min_probes(self) -> dict[str, int]:
        """The minimum paired probes of each probe kind the guards read."""
        return {"unanswerable": self.min_probed, "counterfactual": self.min_counterfactual}

    def __post_init__(self):
        if not isinstance(self.guards, list) or not isinstance(self.floors, dict):
            raise ValueError("guards must be a list of metric names and floors a mapping metric -> minimum")
        unknown = sorted({self.primary_metric, *self.guards, *self.floors} - set(COMPARED))
        if unknown:
            raise ValueError(f"unknown metrics {', '.join(unknown)} (known: {', '.join(COMPARED)})")
        if set(self.floors) & LOWER_IS_BETTER:
            raise ValueError(
                f"a floor is a minimum: none on lower-is-better {', '.join(sorted(set(self.floors) & LOWER_IS_BETTER))}"
            )
        numbers = {
            "min_improvement": self.min_improvement,
            "tolerance": self.tolerance,
            "min_items": self.min_items,
            "min_probed": self.min_probed,
            "min_primary_items": self.min_primary_items,
            "min_counterfactual": self.min_counterfactual,
        }
        wrong = [key for key, value in numbers.items() if isinstance(value, bool) or not isinstance(value, (int, float))]
        if wrong:
            raise ValueError(f"{', '.join(wrong)} must be numbers")
        negative = [f"{key} = {value}" for key, value in numbers.items() if value < 0]
        if negative:
            # a negative margin would promote a challenger shown to be worse; a negative tolerance would fail
            # guards that are shown better
            raise ValueError(f"{', '.join(negative)}: cannot be negative")

    @classmethod
    def from_yaml(cls, path: str | Path = DEFAULT_GATE) -> GatePolicy:
        data = yaml.safe_load(Path(path).read_text()) or {}
        unknown = set(data) - set(asdict(cls()))
        if unknown:
            raise ValueError(f"{path}: unknown gate settings {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass
class Verdict:
    passed: bool
    reasons: list[str]  # one per rule, failures first, then uncertain, then ok
    primary_metric: str
    challenger: float  # primary metric's mean over the paired items (0.0 when not measured)
    incumbent: float
    outcome: str = "not_enough_evidence"  # one of OUTCOMES
    interval: list[float] | None = None  # 95% interval of challenger - incumbent on the primary metric

    def as_dict(self) -> dict:
        return asdict(self)


def compare(rows: list[dict], challenger: str, incumbent: str, metrics=COMPARED) -> dict:
    """The evidence the gate decides on: per metric, both means, the difference, its interval and n, over the
    items both candidates were scored on; how many probes of each kind were paired; and, only when some
    item id has more than one row of a kind, `duplicates` (kind -> those ids), paired by order of occurrence.
    `documents`: the distinct gold-document sets of the challenger's answer items (questions on one document
    are not independent evidence; the evaluation set keeps a few per document)."""
    values: dict[tuple[str, str], dict] = {}  # (candidate, kind) -> (item_id, occurrence) -> metrics
    seen: dict[tuple[str, str, str], int] = {}  # (candidate, kind, item_id) -> rows so far
    repeated: dict[str, set] = {}  # kind -> item ids with more than one row for a candidate
    for row in rows:
        if row["candidate"] in (challenger, incumbent):
            where = (row["candidate"], row["kind"], row["item_id"])
            occurrence = seen[where] = seen.get(where, -1) + 1
            if occurrence:
                repeated.setdefault(row["kind"], set()).add(row["item_id"])
            values.setdefault((row["candidate"], row["kind"]), {})[(row["item_id"], occurrence)] = item_metrics(row)
    counts = {
        kind: len(set(values.get((challenger, kind), {})) & set(values.get((incumbent, kind), {})))
        for kind in sorted({kind for _, kind in values})
    }

    def per_item(candidate: str, metric: str) -> dict:
        return {
            (item, occurrence, kind): m[metric]
            for (name, kind), items in values.items()
            if name == candidate
            for (item, occurrence), m in items.items()
            if metric in m
        }

    compared = {metric: paired_difference(per_item(challenger, metric), per_item(incumbent, metric)) for metric in metrics}
    documents = {tuple(sorted(r["gold_doc_ids"])) for r in rows if r["candidate"] == challenger and r["kind"] == "answer"}
    return {
        "challenger": challenger,
        "incumbent": incumbent,
        "method": METHOD,
        "counts": counts,
        "documents": len(documents),
        "metrics": {metric: d.as_dict() for metric, d in compared.items() if d is not None},
        **({"duplicates": {kind: sorted(ids) for kind, ids in sorted(repeated.items())}} if repeated else {}),
    }


def gain(metric: str, m: dict) -> tuple[float, float]:
    """The interval of the improvement: the difference, sign turned for a lower-is-better metric."""
    return (-m["high"], -m["low"]) if metric in LOWER_IS_BETTER else (m["low"], m["high"])


def unmeasured(metric: str) -> str:
    where = ", with a gold document in the context" if metric.endswith("_gold_in_context") else ""
    return f"{metric}: not measured (no {PROBE_KIND.get(metric, 'answer')} probe scored for both candidates{where})"


def describe(metric: str, m: dict) -> str:
    lower = " (lower is better)" if metric in LOWER_IS_BETTER else ""
    return (
        f"{metric}{lower}: {m['challenger']:.3f} vs {m['incumbent']:.3f} (n={m['n']}), "
        f"difference {m['diff']:+.3f} [95% {m['low']:+.3f}, {m['high']:+.3f}]"
    )


def primary_rule(metric: str, m: dict | None, policy: GatePolicy) -> tuple[str, str]:
    if m is None:
        return "not_enough_evidence", unmeasured(metric)
    low, high = gain(metric, m)
    if low > policy.min_improvement:
        return "passed", f"{describe(metric, m)}: lower bound clears +{policy.min_improvement:.3f}"
    if high < 0:
        return "worse", f"{describe(metric, m)}: shown worse (the whole interval is a loss)"
    return "not_enough_evidence", f"{describe(metric, m)}: not shown better by +{policy.min_improvement:.3f}"


def guard_rule(metric: str, m: dict | None, policy: GatePolicy) -> tuple[str, str]:
    if m is None:
        return "not_enough_evidence", unmeasured(metric)
    low, high = gain(metric, m)
    if high < -policy.tolerance:
        return "worse", f"{describe(metric, m)}: shown worse by more than {policy.tolerance:.3f}"
    if low < -policy.tolerance:
        return "uncertain", f"{describe(metric, m)}: worse by more than {policy.tolerance:.3f} not ruled out"
    return "passed", f"{describe(metric, m)}: not worse by more than {policy.tolerance:.3f}"


def floor_rule(metric: str, floor: float, m: dict | None) -> tuple[str, str]:
    if m is None:
        return "not_enough_evidence", f"{unmeasured(metric)} (floor {floor:.3f})"
    ok = m["challenger"] >= floor
    return ("passed" if ok else "worse"), f"{metric} floor: {m['challenger']:.3f} {'>=' if ok else 'under'} {floor:.3f}"


def evidence_rule(comparison: dict, policy: GatePolicy) -> tuple[str, str]:
    counts = comparison.get("counts") or {}
    needed = {"answer": policy.min_items}
    for metric in [policy.primary_metric, *policy.guards]:
        if metric in PROBE_KIND:
            needed[PROBE_KIND[metric]] = policy.min_probes[PROBE_KIND[metric]]
    primary_n = ((comparison.get("metrics") or {}).get(policy.primary_metric) or {}).get("n", 0)
    spread = {"answer": f" on {comparison['documents']} gold documents"} if comparison.get("documents") else {}
    have = (
        ", ".join(f"{counts.get(kind, 0)} {kind} (needs {n}){spread.get(kind, '')}" for kind, n in needed.items())
        + f"; {policy.primary_metric} paired on {primary_n} items (needs {policy.min_primary_items})"
    )
    duplicates = comparison.get("duplicates") or {}
    if duplicates:
        have += "; repeated item ids paired in order of occurrence: " + ", ".join(
            f"{len(ids)} {kind} ({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''})" for kind, ids in duplicates.items()
        )
    if all(counts.get(kind, 0) >= n for kind, n in needed.items()) and primary_n >= policy.min_primary_items:
        return "passed", f"evidence: compared {have}"
    return "not_enough_evidence", f"evidence: too few items compared to decide: {have}"


def decide(comparison: dict, policy: GatePolicy) -> Verdict:
    """The verdict on a comparison (compare(), or the `comparison` of a recorded evaluation summary)."""
    measured = comparison.get("metrics") or {}
    primary = measured.get(policy.primary_metric)
    rules = [primary_rule(policy.primary_metric, primary, policy), evidence_rule(comparison, policy)]
    rules += [guard_rule(metric, measured.get(metric), policy) for metric in policy.guards]
    rules += [floor_rule(metric, floor, measured.get(metric)) for metric, floor in policy.floors.items()]
    return verdict_of(rules, rules[1][0] == "passed", policy.primary_metric, primary)


def verdict_of(rules: list[tuple[str, str]], enough: bool, primary_metric: str, primary: dict | None) -> Verdict:
    """The outcome of (status, reason) rules: not enough evidence when `enough` is false (intervals that small
    are not trusted either way), worse when a rule shows harm, passed when every rule holds."""
    statuses = {status for status, _ in rules}
    if not enough:
        outcome = "not_enough_evidence"
    elif "worse" in statuses:
        outcome = "worse"
    elif "not_enough_evidence" in statuses:
        outcome = "not_enough_evidence"
    else:
        outcome = "passed"
    label = {"passed": "ok", "uncertain": "uncertain"}
    order = {"uncertain": 1, "passed": 2}
    reasons = [f"{label.get(status, 'FAIL')} {text}" for status, text in sorted(rules, key=lambda r: order.get(r[0], 0))]
    return Verdict(
        passed=outcome == "passed",
        reasons=reasons,
        primary_metric=primary_metric,
        challenger=primary["challenger"] if primary else 0.0,
        incumbent=primary["incumbent"] if primary else 0.0,
        outcome=outcome,
        interval=[primary["low"], primary["high"]] if primary else None,
    )
