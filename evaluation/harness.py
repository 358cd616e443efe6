"""The evaluation harness: the same questions through several model configurations.

    probes, retrieval = build_probes(items, search, HarnessConfig(k=3))
    report = run_harness(probes, retrieval, [Candidate("base_rag", None), ...], generator_for)

Every item of an evaluation set (docs/design.md format) becomes up to three probes:
- `answer`: the production retrieval (top k) as context; scores correctness,
  citations and format;
- `unanswerable`: the same question with an off-topic context, the documents the
  retriever ranks nearest beyond the question's neighbourhood
  (ragtune.behaviour.contexts), or an item marked `answerable: false` with what
  retrieval serves; scores abstention;
- `counterfactual`: the gold chunk with its identifier changed (a fact the
  weights cannot know); scores whether the answer follows the document.
A candidate without retrieval gets the answer probes with no documents: the gap
to the same adapter with retrieval is what the index adds.

A candidate with retrieval and a relevance floor (`Candidate.floor`,
ragtune.knowledge.relevance) declines a probe whose context is less related to the
question than the floor, without generating, as serving does; its row says
`below_floor` and carries no format validity or token count (the model wrote nothing).
Each candidate has the floor it is served with (evaluation/runner.py), so a
comparison is between what is served and what would be.

Retrieval runs once per probe, shared by every candidate. Generation is greedy,
so a candidate's rows for the same probes are reproducible and may be cached.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from evaluation.metrics import (
    abstained,
    adheres,
    citation_accuracy,
    distinctive_identifier,
    exact_match,
    identifier_match,
    identifier_shown,
    percentile,
    token_f1,
)
from evaluation.retrieval import ranked_documents, recall_at_k, reciprocal_rank
from ragtune.behaviour.contexts import NEIGHBOURHOOD, PROBE, counterfactual_identifier, edit_chunk, off_topic_context
from ragtune.jsonl import iter_jsonl, read_jsonl, write_jsonl
from ragtune.knowledge.relevance import below
from ragtune.llm.generator import Generation
from ragtune.llm.prompting import NOT_COVERED, SYSTEM_PROMPT, answer_json
from ragtune.precision import resolve_dtype

# (question, n) -> ranked chunks [{doc_id, chunk_id, title, text, similarity?}], best first
Search = Callable[[str, int], list[dict]]
# (question, chunks) -> the context's relevance to the question (ragtune.knowledge.relevance), None without chunks
Relate = Callable[[str, list[dict]], float | None]
REQUIRED = {"id": str, "question": str, "reference_answer": str, "gold_doc_ids": list, "answerable": bool}
DOC_FIELDS = ("doc_id", "chunk_id", "title", "text")


@dataclass
class HarnessConfig:
    k: int = 3  # documents in the context, as served
    limit: int | None = None  # items evaluated (None: all)
    probe_limit: int | None = None  # of those, items also probed for abstention and adherence (None: all)
    max_new_tokens: int = 128
    depth: int = 10  # retrieved per question for recall@depth and MRR
    neighbourhood: int = NEIGHBOURHOOD  # an unanswerable probe's documents are ranked beyond the question's top ones
    dtype: str = "auto"  # ragtune.precision: bfloat16 where the hardware has it
    batch_size: int = 8  # prompts generated together (left-padded)
    constrained: bool = True  # decode under the answer JSON schema (ragtune.llm.constrained)

    @classmethod
    def for_settings(cls, settings, **choices) -> HarnessConfig:
        """The caller's choices (k, limit, ...) with the machine-wide ones taken from the settings; k, when not
        chosen (None), is the served context's size (RAGTUNE_SERVE_K), so a relevance floor sees what serving sees."""
        choices["k"] = choices.get("k") or settings.serve_k
        return cls(
            dtype=settings.dtype,
            batch_size=settings.generate_batch_size,
            constrained=settings.constrained_decoding,
            **choices,
        )

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Probe:
    item_id: str
    kind: str  # answer | unanswerable | counterfactual
    question: str
    documents: list[dict]
    gold_doc_ids: list[str]
    reference: str = ""
    identifier: str = ""
    expected: str = ""  # counterfactual: the edited identifier the answer should state ...
    original: str = ""  # ... instead of the one it replaced
    retrieval_ms: float = 0.0
    relevance: float | None = None  # the context's relevance to the question, where build_probes was given `relate`


@dataclass
class Candidate:
    name: str  # base_rag, champion_rag, challenger_rag, challenger_no_rag (MLflow metric names allow no "+")
    adapter_dir: str | None  # None: the base model alone
    retrieval: bool = True
    version: str | None = None  # registry version, for the report and the cache key
    floor: float | None = None  # relevance floor it is served with: below it, decline without generating


@dataclass
class EvalReport:
    metrics: dict[str, dict[str, float]]  # candidate name -> metric -> value
    retrieval: dict[str, float]
    rows: list[dict]
    items: int
    skipped: list[str] = field(default_factory=list)  # eval-set lines left out, with why

    def as_dict(self) -> dict:
        return {"metrics": self.metrics, "retrieval": self.retrieval, "items": self.items, "skipped": self.skipped}


def load_eval_set(path: Path) -> tuple[list[dict], list[str]]:
    """(items, skipped): malformed lines are skipped with their line number and reason, the rest kept."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"evaluation set {path} does not exist")
    items, skipped = [], []
    for number, item, problem in iter_jsonl(path):
        if problem:
            skipped.append(f"line {number}: {problem}")
            continue
        problems = [
            f"{key} missing or not {kind.__name__}"
            for key, kind in REQUIRED.items()
            if not isinstance(item, dict) or not isinstance(item.get(key), kind)
        ]
        if problems:
            skipped.append(f"line {number}: {', '.join(problems)}")
            continue
        items.append(item)
    if not items:
        raise ValueError(f"evaluation set {path} has no usable item" + (f" ({skipped[0]})" if skipped else ""))
    return items, skipped


def eval_set_digest(items: list[dict]) -> str:
    return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:16]


def documents_of(chunks: list[dict]) -> list[dict]:
    return [{k: c[k] for k in DOC_FIELDS} for c in chunks]


def build_probes(
    items: list[dict], search: Search, config: HarnessConfig, relate: Relate | None = None
) -> tuple[list[Probe], dict[str, float]]:
    """Probes for every item (retrieval timed once per question), and the retrieval metrics over answerable items.
    With `relate`, each probe also carries its context's relevance, for a floor to act on."""

    def related(question: str, chunks: list[dict]) -> float | None:
        return relate(question, chunks) if relate is not None else None

    chosen = items[: config.limit] if config.limit is not None else items
    probed = 0
    probes: list[Probe] = []
    recall = rr = answerable = 0.0
    for item in chosen:
        started = time.perf_counter()
        ranked = search(item["question"], max(config.depth, config.k))
        retrieval_ms = (time.perf_counter() - started) * 1000
        gold = list(item["gold_doc_ids"])
        common = dict(item_id=item["id"], question=item["question"], gold_doc_ids=gold, retrieval_ms=retrieval_ms)
        if not item["answerable"]:
            context = ranked[: config.k]
            probes.append(
                Probe(
                    kind="unanswerable",
                    documents=documents_of(context),
                    relevance=related(item["question"], context),
                    **common,
                )
            )
            continue
        answerable += 1
        recall += recall_at_k(ranked_documents(ranked), gold, config.k)
        rr += reciprocal_rank(ranked_documents(ranked), gold)
        identifier = item.get("identifier") or item["reference_answer"]
        probes.append(
            Probe(
                kind="answer",
                documents=documents_of(ranked[: config.k]),
                reference=item["reference_answer"],
                identifier=identifier,
                relevance=related(item["question"], ranked[: config.k]),
                **common,
            )
        )
        if config.probe_limit is not None and probed >= config.probe_limit:
            continue
        probed += 1
        others = [c for c in ranked if c["doc_id"] not in gold]
        unrelated = off_topic_context(search, item["question"], set(gold), config.neighbourhood, config.k)
        if unrelated:
            probes.append(
                Probe(
                    kind="unanswerable",
                    documents=documents_of(unrelated),
                    relevance=related(item["question"], unrelated),
                    **common,
                )
            )
        edited = counterfactual_context(item, ranked, others, identifier, config.k)
        if edited:
            relevance = related(item["question"], edited["documents"])
            probes.append(Probe(kind="counterfactual", identifier=identifier, relevance=relevance, **edited, **common))
    n = max(answerable, 1)
    return probes, {f"recall@{config.k}": recall / n, "mrr": rr / n, "answerable_items": int(answerable)}


def counterfactual_context(item: dict, ranked: list[dict], others: list[dict], identifier: str, k: int) -> dict | None:
    """The best gold chunk with its identifier replaced, among k-1 retrieved non-gold chunks; None when not editable."""
    original = distinctive_identifier(identifier)
    edited = counterfactual_identifier(identifier, PROBE)
    changed = (edit_chunk(c, original, edited) for c in ranked if c["doc_id"] in item["gold_doc_ids"]) if edited else ()
    gold_chunk = next((c for c in changed if c is not None), None)
    if gold_chunk is None:
        return None
    documents = documents_of([gold_chunk] + others[: k - 1])
    random.Random(item["id"]).shuffle(documents)  # the edited chunk is not always first
    return {"documents": documents, "expected": edited, "original": original}


def score(probe: Probe, generation, candidate: Candidate) -> dict:
    """One row of per-item results: what was asked, what came back, and the metrics that apply to this probe."""
    retrieved = ranked_documents(probe.documents)
    row = {
        "candidate": candidate.name,
        "version": candidate.version,
        "item_id": probe.item_id,
        "kind": probe.kind,
        "question": probe.question,
        "retrieved": retrieved,
        "gold_doc_ids": probe.gold_doc_ids,
        "answer": generation.answer,
        "citations": generation.citations,
        "raw": generation.raw,
        "format_validity": float(generation.valid),
        "tokens": generation.tokens,
        **(
            {}
            if generation.unforced is None
            else {"format_validity_unconstrained": float(generation.unforced and generation.valid)}
        ),
        "latency_ms": (probe.retrieval_ms if candidate.retrieval else 0.0) + generation.seconds * 1000,
    }
    if candidate.retrieval and probe.relevance is not None:
        row["relevance"] = round(probe.relevance, 4)
    if probe.kind == "answer":
        row.update(reference=probe.reference, identifier=probe.identifier)
        if candidate.retrieval:
            row["identifier_shown"] = float(identifier_shown(probe.identifier, probe.documents, probe.gold_doc_ids))
        row.update(answer_metrics(row, retrieval=candidate.retrieval))
    elif probe.kind == "unanswerable":
        row["abstention"] = float(abstained(generation.answer))
    else:
        row["adherence"] = adheres(generation.answer, probe.expected, probe.original)
    return row


def answer_metrics(row: dict, retrieval: bool) -> dict:
    """An answer probe's metrics from its row alone (reply, reference, identifier, citations, served ids), so
    recorded rows can be scored again when a definition changes (bench/rejudge.py)."""
    others = [d for d in row["retrieved"] if d not in row["gold_doc_ids"]]
    metrics = dict(
        exact_match=exact_match(row["answer"], row["reference"]),
        token_f1=token_f1(row["answer"], row["reference"]),
        identifier_match=identifier_match(row["answer"], row["identifier"], others),
        abstained=float(abstained(row["answer"])),
    )
    if retrieval:
        metrics["citation_accuracy"] = citation_accuracy(row["citations"], row["retrieved"], row["gold_doc_ids"])
    return metrics


def mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if key in r]
    return sum(values) / len(values) if values else None


CONDITIONAL = ("identifier_match", "citation_accuracy", "false_abstention")  # judged again where the gold was served


def gold_in_context(row: dict) -> bool:
    return bool(set(row.get("retrieved") or ()) & set(row.get("gold_doc_ids") or ()))


def item_metrics(row: dict) -> dict:
    """The row with the metrics derived from it. On an answer probe: `false_abstention` (it abstained),
    `gold_in_context`, and, where a gold document was in the context, `<metric>_gold_in_context` for each
    CONDITIONAL metric: retrieval caps the overall figures (no model cites a document it was not shown).

    `identifier_match_gold_in_context` asks more than a gold document in the context: its identifier must
    also be told apart there (`identifier_shown`: in a gold document, and not in every served one), or naming it
    would not show which document the model read. Rows scored before that field existed fall back to
    the gold document alone.

    `abstain_decision`: the call to abstain was right, on the probes where the right call is known: answer
    probes with a gold document in the context (answer) and unanswerable probes (abstain). Abstention alone
    rewards abstaining on everything and false abstention rewards never abstaining; this one cannot be won
    either way. An answer probe whose gold document retrieval missed has no right call: the documents served
    instead are often other APIs for the same task that answer it as well. How often a model abstains
    there is reported as `abstained_gold_missed`, judged by nothing.

    `abstention_by_model`: abstention on the unanswerable probes the relevance floor let through to the model
    (all of them without a floor): what the weights decide, apart from what the floor declined.
    """
    if row["kind"] == "unanswerable" and "abstention" in row:
        by_model = {} if row.get("below_floor") else {"abstention_by_model": row["abstention"]}
        return {**row, "abstain_decision": row["abstention"], **by_model}
    if row["kind"] != "answer":
        return row
    derived = {"false_abstention": row["abstained"]} if "abstained" in row else {}
    derived["gold_in_context"] = float(gold_in_context(row))
    if "abstained" in row and row.get("retrieved"):  # a candidate without retrieval had nothing to miss
        if derived["gold_in_context"]:
            derived["abstain_decision"] = 1.0 - row["abstained"]
        else:
            derived["abstained_gold_missed"] = row["abstained"]
    if derived["gold_in_context"]:
        derived.update({f"{key}_gold_in_context": value for key, value in {**row, **derived}.items() if key in CONDITIONAL})
        if not row.get("identifier_shown", 1.0):
            derived.pop("identifier_match_gold_in_context", None)
    return {**row, **derived}


def summarise(rows: list[dict]) -> dict[str, float]:
    """Averages of one candidate's rows; a metric with no probe of its kind is left out."""
    scored = [item_metrics(r) for r in rows]
    metrics = {
        key: mean(scored, key)
        for key in (
            "exact_match",
            "token_f1",
            "identifier_match",
            "citation_accuracy",
            "abstention",
            "abstention_by_model",
            "adherence",
            "format_validity",
            "format_validity_unconstrained",
            "false_abstention",
            "gold_in_context",
            "abstain_decision",
            "abstained_gold_missed",
            "below_floor",
            *(f"{key}_gold_in_context" for key in CONDITIONAL),
        )
    }
    latencies = [r["latency_ms"] for r in rows]
    metrics.update(
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
        tokens_mean=mean(rows, "tokens"),
        answers=float(len(rows)),
    )
    return {k: round(v, 4) for k, v in metrics.items() if v is not None}


def decline(probe: Probe, candidate: Candidate) -> dict:
    """The row of a probe below the candidate's floor: the not-covered reply, as serving gives it without asking the
    model; no format validity or token count, which would credit the model with a reply it did not write."""
    reply = Generation(answer=NOT_COVERED, citations=[], valid=True, raw=answer_json(NOT_COVERED, []), tokens=0, seconds=0.0)
    row = score(probe, reply, candidate)
    del row["format_validity"], row["tokens"]
    return row


def probes_for(candidate: Candidate, probes: list[Probe]) -> list[Probe]:
    if candidate.retrieval:
        return probes
    return [Probe(**{**asdict(p), "documents": [], "retrieval_ms": 0.0}) for p in probes if p.kind == "answer"]


# Bump when scoring or decoding code changes what a cached row would hold (metrics, the constraint).
CACHE_VERSION = 9


def adapter_digest(adapter_dir: str | None) -> str | None:
    """sha256 of the adapter's files: a version number alone names other weights once a registry is recreated."""
    if not adapter_dir:
        return None
    digest = hashlib.sha256()
    for path in sorted(Path(adapter_dir).glob("adapter_*")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def declined(candidate: Candidate, probes: list[Probe]) -> list[bool]:
    """Which of the candidate's probes its relevance floor declines (none without retrieval or a floor)."""
    return [candidate.retrieval and below(candidate.floor, p.relevance) for p in probes]


def cache_key(candidate: Candidate, probes: list[Probe], base_model: str, config: HarnessConfig) -> str:
    """Same adapter version, same prompts (system prompt included), same decoding, same probes declined by the
    floor -> same scored rows (greedy). The declines, not the floor's value: a new floor that declines the same
    probes leaves the rows as they were."""
    identity = {
        "adapter": candidate.version if candidate.adapter_dir else None,
        "retrieval": candidate.retrieval,
        "weights": adapter_digest(candidate.adapter_dir),
        "base_model": base_model,
        "max_new_tokens": config.max_new_tokens,
        "dtype": resolve_dtype(config.dtype),
        "constrained": config.constrained,
        "batch_size": config.batch_size,
        "floored": candidate.retrieval and candidate.floor is not None,
        "declined": declined(candidate, probes),
        "system_prompt": SYSTEM_PROMPT,
        "version": CACHE_VERSION,
        "prompts": [(p.kind, p.question, p.documents) for p in probes],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def run_harness(
    probes: list[Probe],
    retrieval: dict[str, float],
    candidates: list[Candidate],
    generator_for,
    base_model: str,
    config: HarnessConfig,
    cache_dir: Path | None = None,
    progress=None,
    skipped: list[str] | None = None,
) -> EvalReport:
    """Every candidate answers its probes; `generator_for(candidate)` loads its model (one at a time).

    Rows of a registered version (or the base model) are cached under `cache_dir` by a key over the exact
    prompts, so the champion and the base model are not re-generated on the next retrain when nothing changed.
    """
    rows, metrics = [], {}
    for candidate in candidates:
        mine = probes_for(candidate, probes)
        cacheable = cache_dir is not None and (candidate.adapter_dir is None or candidate.version is not None)
        cached = Path(cache_dir) / f"{cache_key(candidate, mine, base_model, config)}.jsonl" if cacheable else None
        if cached is not None and cached.is_file():
            produced = [{**row, "candidate": candidate.name, "cached": True} for row in read_jsonl(cached)]
        else:
            generator = generator_for(candidate)
            done = 0

            def advance(n: int, name: str = candidate.name, total: int = len(mine)) -> None:
                nonlocal done
                done += n
                if progress is not None:
                    progress(name, done, total)

            refused = declined(candidate, mine)
            asked = [p for p, no in zip(mine, refused) if not no]
            advance(len(mine) - len(asked))  # the declined ones are done already
            generated = iter(generator.generate_batch([(p.question, p.documents) for p in asked], progress=advance))
            produced = [
                decline(probe, candidate) if no else score(probe, next(generated), candidate) for probe, no in zip(mine, refused)
            ]
            if candidate.retrieval and candidate.floor is not None:
                produced = [{**row, "below_floor": float(no)} for row, no in zip(produced, refused)]
            del generator
            if cached is not None:
                write_jsonl(cached, produced)
        rows.extend(produced)
        metrics[candidate.name] = summarise(produced)
    items = len({p.item_id for p in probes})
    return EvalReport(metrics=metrics, retrieval=retrieval, rows=rows, items=items, skipped=list(skipped or []))
