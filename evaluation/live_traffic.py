"""The challenger on live traffic: its shadow answers beside the champion's answers to the same questions.

    table = live_traffic(log.records(), challenger="7")
    table["pairs"]          # live questions the challenger answered in the shadow
    table["agreement"]      # share of them where both made the same call and cited the same documents
    table["metrics"]        # fallback, abstention, valid citation, latency: champion, challenger, paired diff [95%]
    table["disagreements"]  # the questions they disagree on (reviewable on /review, "challenger disagrees")

With `RAGTUNE_SHADOW_SHARE` > 0 the server answers a share of live questions again with the version
behind `challenger` and logs it with `shadow_of` (ragtune/serving/server.py). Each shadow answer is
paired with the live answer it shadows: the same question, the same caller's groups, a day's traffic
rather than the held-out set. Every figure is paired over those questions
(evaluation.intervals.paired_difference: Newcombe's interval for 0/1 outcomes, a bootstrap for
latency). The flags are ragtune.behaviour.answer_flags', as in the live report and the review queue.
"""

from __future__ import annotations

from evaluation.intervals import mean_interval, paired_difference
from evaluation.metrics import percentile
from ragtune.behaviour.answer_flags import agree, flags

# the 0/1 flags compared: what the caller was told (not covered, by the model or its floor), and citations
# where the model answered; each over the pairs where both sides' flag is known
OUTCOMES = ("fallback", "not_covered", "below_floor", "valid_citation")
MAX_DISAGREEMENTS = 20


def shadow_pairs(records: list[dict], challenger: str) -> list[tuple[dict, dict]]:
    """(live answer, the challenger's shadow answer to it), in log order; a shadow whose live answer is
    not among `records` is left out."""
    live = {r["id"]: r for r in records if not r.get("shadow_of")}
    return [
        (live[r["shadow_of"]], r)
        for r in records
        if r.get("shadow_of") in live and str(r.get("model_version")) == str(challenger)
    ]


def live_traffic(records: list[dict], challenger: str) -> dict:
    """The challenger's shadow answers against the champion's live ones; {"pairs": 0} when there are none."""
    pairs = shadow_pairs(records, challenger)
    if not pairs:
        return {"challenger": str(challenger), "pairs": 0}
    agreed = [float(agree(live, shadow)) for live, shadow in pairs]
    share = mean_interval(agreed)
    metrics = {}
    for name in OUTCOMES:
        known = [(live, flags(live)[name], flags(shadow)[name]) for live, shadow in pairs]
        known = [(live, a, b) for live, a, b in known if a is not None and b is not None]
        if known:
            champion = {live["id"]: float(a) for live, a, _ in known}
            mine = {live["id"]: float(b) for live, _, b in known}
            metrics[name] = comparison(mine, champion)
    latency = [
        (live, shadow) for live, shadow in pairs if live.get("latency_ms") is not None and shadow.get("latency_ms") is not None
    ]
    if latency:
        metrics["latency_ms"] = comparison(
            {live["id"]: shadow["latency_ms"] for live, shadow in latency},
            {live["id"]: live["latency_ms"] for live, _ in latency},
        )
        metrics["latency_ms"]["p50"] = {
            "champion": percentile([live["latency_ms"] for live, _ in latency], 50),
            "challenger": percentile([shadow["latency_ms"] for _, shadow in latency], 50),
        }
        metrics["latency_ms"]["p95"] = {
            "champion": percentile([live["latency_ms"] for live, _ in latency], 95),
            "challenger": percentile([shadow["latency_ms"] for _, shadow in latency], 95),
        }
    champions = sorted({str(live.get("model_version")) for live, _ in pairs})
    return {
        "challenger": str(challenger),
        "champion_versions": champions,
        "pairs": len(pairs),
        "agreement": {"mean": share.mean, "low": share.low, "high": share.high},
        "metrics": metrics,
        "disagreements": [
            {
                "id": live["id"],
                "question": live["question"],
                "champion": live["answer"],
                "challenger": shadow["answer"],
                "champion_cited": sorted(c["doc_id"] for c in live.get("citations") or []),
                "challenger_cited": sorted(c["doc_id"] for c in shadow.get("citations") or []),
            }
            for (live, shadow), same in zip(pairs, agreed)
            if not same
        ][:MAX_DISAGREEMENTS],
    }


def comparison(challenger: dict[str, float], champion: dict[str, float]) -> dict:
    difference = paired_difference(challenger, champion)
    return {
        "champion": difference.incumbent,
        "challenger": difference.challenger,
        "diff": difference.diff,
        "low": difference.low,
        "high": difference.high,
        "n": difference.n,
        "method": difference.method,
    }


def live_traffic_markdown(table: dict) -> str:
    """The table as the adapter_evaluation asset shows it in the Dagster UI."""
    if not table["pairs"]:
        return (
            f"No shadow answers from version {table['challenger']} yet: with `RAGTUNE_SHADOW_SHARE` > 0 the server "
            "answers a share of live questions with the challenger, and they show here."
        )
    a = table["agreement"]
    lines = [
        f"Version {table['challenger']} answered {table['pairs']} live questions in the shadow of "
        f"{', '.join(table['champion_versions'])}; they agree (same call, same documents cited) on "
        f"{a['mean']:.2f} [95% {a['low']:.2f}, {a['high']:.2f}].",
        "",
        "| live traffic | champion | challenger | difference [95%] | n |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, m in table["metrics"].items():
        digits = 0 if name == "latency_ms" else 2
        lines.append(
            f"| {name} | {m['champion']:.{digits}f} | {m['challenger']:.{digits}f} | "
            f"{m['diff']:+.{digits}f} [{m['low']:+.{digits}f}, {m['high']:+.{digits}f}] | {m['n']} |"
        )
    if table["disagreements"]:
        lines += ["", "Disagreements (review them on /review, filter 'challenger disagrees'):", ""]
        lines += [f"- {d['question'][:120]}" for d in table["disagreements"]]
    return "\n".join(lines)
