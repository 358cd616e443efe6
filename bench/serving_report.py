"""The serving report's logic on one day of 100k synthetic logged interactions: time and peak memory.

A temporary sqlite interaction log gets N synthetic answers on one UTC day (two model versions, two
index versions, 5% shadow answers, a third of them rated, some fallbacks, abstentions and answers
citing outside their context; questions drawn from 400 topics of 5 phrasings each, so the coverage
gaps have something to cluster). Then, as `serving_report` does it: read the day from the log, build
the live report (rates, percentiles, histogram), cluster the coverage gaps with the real embedder
(the bundled MiniLM; at most MAX_GAP_QUESTIONS distinct questions), compare the two versions. Writing
the log is timed apart: the report does not pay it.

Target: a day of 100k answers reported in under 60 s on 2 cores, under 1 GB peak.

    python bench/serving_report.py [--n 100000]
"""

import argparse
import random
import resource
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import timer, write_result

from evaluation.live_report import compare_periods, coverage_gaps, live_report
from ragtune.behaviour.interactions import InteractionLog
from ragtune.knowledge.embedder import load_embedder
from ragtune.llm.prompting import NOT_COVERED
from ragtune.settings import load_settings

DAY = datetime(2025, 3, 10, tzinfo=UTC)
PHRASINGS = ("How do I {t}?", "What is the way to {t}?", "Can you explain how to {t}", "{t}: how?", "I need to {t}, which API?")
VERBS = ("load", "fine-tune", "quantize", "export", "serve", "batch", "cache", "evaluate")
NOUNS = ("a sentiment model", "an image classifier", "a speech recognizer", "a translation model", "a tokenizer")
SUFFIXES = (
    "on CPU",
    "on GPU",
    "in TensorFlow",
    "with PyTorch",
    "from the hub",
    "offline",
    "in bulk",
    "for Spanish",
    "fast",
    "safely",
)


def synthetic(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    topics = [f"{v} {o} {s}" for v in VERBS for o in NOUNS for s in SUFFIXES]  # 400
    records = []
    for i in range(n):
        version = rng.choice(("3", "4"))
        worse = version == "4"
        similarity = max(-0.1, min(1.0, rng.gauss(0.55, 0.15)))
        docs = [f"doc{rng.randrange(900)}.md" for _ in range(3)]
        answer = NOT_COVERED if rng.random() < (0.08 if worse else 0.05) else f"Use api_{i % 97}()."
        cited = docs[:1] if rng.random() < 0.9 else ["elsewhere.md"]
        records.append(
            {
                "id": f"i{i}",
                "ts": (DAY + timedelta(seconds=i * 86400 / n)).isoformat(),
                "user": f"user{i % 500}",
                "question": rng.choice(PHRASINGS).format(t=rng.choice(topics)),
                "answer": answer,
                "citations": [{"doc_id": d, "chunk_id": f"{d}#0"} for d in cited],
                "model_version": version,
                "index_version": rng.choice(("11", "12")),
                "latency_ms": rng.lognormvariate(8.5, 0.3),
                "retrieved": [
                    {"doc_id": d, "chunk_id": f"{d}#0", "score": 0.03, "similarity": similarity - 0.05 * k}
                    for k, d in enumerate(docs)
                ],
                "fallback": rng.random() < 0.02,
                "shadow_of": f"i{i - 1}" if i and rng.random() < 0.05 else None,
                "feedback": rng.choice(("up", "down")) if rng.random() < 0.3 else None,
            }
        )
    return records


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    settings = load_settings()
    with tempfile.TemporaryDirectory() as tmp:
        log = InteractionLog(f"sqlite:///{Path(tmp) / 'interactions.db'}")
        records = synthetic(args.n)
        with timer() as write:
            for start in range(0, len(records), 10_000):
                log.extend(records[start : start + 10_000])
        del records
        rss_before = peak_rss_mb()
        with timer() as read:
            day = log.records(since=DAY.isoformat(), until=(DAY + timedelta(days=1)).isoformat())
        with timer() as report_time:
            report = live_report(day, settings.review_low_similarity)
        embedder = load_embedder(settings.embedder_path(), settings.embed_batch_size, settings.dtype)
        with timer() as gaps_time:
            gaps = coverage_gaps([r for r in day if r["shadow_of"] is None], settings.review_low_similarity, embedder.embed)
        with timer() as compare_time:
            comparison = compare_periods(report["by_model"]["4"], report["by_model"]["3"], 0.05, 30)
    total = read.seconds + report_time.seconds + gaps_time.seconds + compare_time.seconds
    write_result(
        "serving_report",
        {
            "interactions": args.n,
            "live_answers": report["answers"],
            "shadow_answers": report["shadow_answers"],
            "write_log_s": round(write.seconds, 1),
            "read_day_s": round(read.seconds, 2),
            "report_s": round(report_time.seconds, 2),
            "gap_questions": gaps["questions"],
            "gap_clustered": gaps["clustered"],
            "gap_clusters": len(gaps["clusters"]),
            "largest_gap": gaps["clusters"][0] if gaps["clusters"] else None,
            "gaps_s": round(gaps_time.seconds, 2),
            "compare_s": round(compare_time.seconds, 4),
            "total_s": round(total, 1),
            "verdict_4_vs_3": comparison["verdict"],
            "regressions": comparison["regressions"],
            "peak_rss_mb_after_write": round(rss_before, 0),
            "peak_rss_mb": round(peak_rss_mb(), 0),
        },
    )


if __name__ == "__main__":
    main()
