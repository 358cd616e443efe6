"""PII scrubber recall and precision on the seeded synthetic set (`tests.pii_samples`).

`find_pii` on `labelled_samples(seed=0, per_kind=200)`: 200 positives per kind, 50 texts mixing
several kinds, 200 negatives (no PII, but close: model ids with long numbers, versions, dates,
commit hashes, Luhn-invalid 16-digit numbers, code). A labelled value is found when a finding
of the same kind overlaps it; a finding that overlaps no labelled value of its kind (on a
negative or a positive) is a false positive for its kind. Also texts/s of `find_pii`.
Target: recall >= 0.99 for every structured kind.

    python bench/pii.py
"""

from collections import Counter, defaultdict

from common import timer, write_result

from ragtune.behaviour.pii import KINDS, find_pii
from tests.pii_samples import labelled_samples

SEED, PER_KIND, TARGET_RECALL = 0, 200, 0.99


def overlaps(a_start: int, a_end: int, b_start: int, b_end: int) -> bool:
    return a_start < b_end and b_start < a_end


def ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def main() -> None:
    samples = labelled_samples(seed=SEED, per_kind=PER_KIND)
    find_pii("warm up: loads the recognizers")
    with timer() as t:
        findings = [find_pii(s.text) for s in samples]

    labelled, caught, predicted, correct = Counter(), Counter(), Counter(), Counter()
    missed_by_variant, false_by_variant = defaultdict(Counter), defaultdict(Counter)
    examples = defaultdict(list)
    for sample, found in zip(samples, findings):
        for kind, start, end in sample.spans:
            labelled[kind] += 1
            if any(f.kind == kind and overlaps(f.start, f.end, start, end) for f in found):
                caught[kind] += 1
            else:
                missed_by_variant[kind][sample.variant] += 1
                if len(examples[f"missed {kind}"]) < 3:
                    examples[f"missed {kind}"].append(
                        {"text": sample.text, "found": [[f.kind, sample.text[f.start : f.end]] for f in found]}
                    )
        for f in found:
            predicted[f.kind] += 1
            if any(f.kind == kind and overlaps(f.start, f.end, start, end) for kind, start, end in sample.spans):
                correct[f.kind] += 1
            else:
                false_by_variant[f.kind][sample.variant] += 1
                if len(examples[f"false {f.kind}"]) < 3:
                    examples[f"false {f.kind}"].append({"text": sample.text, "found": sample.text[f.start : f.end]})

    per_kind = {}
    for kind in KINDS:
        recall, precision = ratio(caught[kind], labelled[kind]), ratio(correct[kind], predicted[kind])
        per_kind[kind] = {
            "labelled": labelled[kind],
            "found": caught[kind],
            "recall": recall,
            "findings": predicted[kind],
            "false_positives": predicted[kind] - correct[kind],
            "precision": precision,
            "meets_target": recall is not None and recall >= TARGET_RECALL,
            "missed_by_variant": dict(missed_by_variant[kind].most_common()),
            "false_positives_by_variant": dict(false_by_variant[kind].most_common()),
        }
    negatives = [found for sample, found in zip(samples, findings) if not sample.spans]
    write_result(
        "pii",
        {
            "samples": len(samples),
            "seed": SEED,
            "positives_per_kind": PER_KIND,
            "negatives": len(negatives),
            "negatives_with_findings": sum(1 for found in negatives if found),
            "overall": {
                "recall": ratio(sum(caught.values()), sum(labelled.values())),
                "precision": ratio(sum(correct.values()), sum(predicted.values())),
                "macro_recall": round(sum(per_kind[k]["recall"] for k in KINDS) / len(KINDS), 4),
            },
            "per_kind": per_kind,
            "texts_per_s": round(len(samples) / t.seconds, 1),
            "seconds": round(t.seconds, 2),
            "target": {
                "recall_per_kind": f">= {TARGET_RECALL}",
                "kinds": "all eight: each is a structured identifier (pattern + checksum or format)",
            },
            "met": {"recall": all(per_kind[k]["meets_target"] for k in KINDS)},
            "examples": dict(examples),
        },
    )


if __name__ == "__main__":
    main()
