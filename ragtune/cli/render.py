"""Human-readable output of the CLI's reports (the --json form is the report itself)."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

console = Console()


def print_refresh(p: dict) -> None:
    table = Table(title=f"index refresh (run {p.get('run_id', '-')[:8]})", show_header=False)
    for key in (
        "docs_added",
        "docs_updated",
        "docs_unchanged",
        "docs_deleted",
        "chunks_embedded",
        "chunks_deleted",
        "chunks_total",
    ):
        table.add_row(key.replace("_", " "), str(p[key]))
    table.add_row("index version", f"{p['version_before']} -> {p['index_version']}")
    table.add_row("seconds", str(p["seconds"]))
    console.print(table)
    for skip in p.get("skipped", []):
        console.print(f"[yellow]skipped[/] {skip['path']}: {skip['reason']}")
    for note in p.get("notes", []):
        console.print(f"[cyan]note[/] {note}")


def print_hits(p: dict) -> None:
    if not p["hits"]:
        console.print("no results")
    for rank, hit in enumerate(p["hits"], start=1):
        snippet = " ".join(hit["text"].split())[:160]
        console.print(f"[bold]{rank}. {hit['title']}[/] [dim]({hit['doc_id']} · {hit['chunk_id'][:8]} · {hit['score']:.4f})[/]")
        console.print(f"   {snippet}")


def print_answer(p: dict) -> None:
    style = "yellow" if p["fallback"] else "bold"
    console.print(f"[{style}]{p['answer']}[/]", highlight=False)
    for n, c in enumerate(p["citations"], start=1):
        console.print(f"  [{n}] {c['title']} [dim]({c['doc_id']})[/]: {c['quote']}", highlight=False)
    if p.get("below_floor"):
        console.print("[dim]declined: no retrieved document is as related to the question as the model's floor[/]")
    console.print(
        f"[dim]id {p['id']} · model {p['model_version']} · index {p['index_version']} · {p['latency_ms'] / 1000:.1f} s "
        f"(retrieval {p['retrieval_ms']:.0f} ms) · rate it: ragtune feedback {p['id']} up|down[/]"
    )


def print_demo(p: dict) -> None:
    if "refresh" not in p:
        console.print(f"[red]demo failed:[/] {p.get('error')}")
        return
    print_refresh(p["refresh"])
    r = p["retrieval"]
    console.print(
        f"demo data: {p['data']['documents']} documents, {p['data']['interactions']} interactions, "
        f"{p['data']['eval_items']} held-out questions"
    )
    b = p.get("retrieval_before") or r
    changed = "" if b == r else f" (before the embedder swap: recall@5 {b['recall@5']:.2f}, MRR {b['mrr']:.2f})"
    console.print(
        f"retrieval on held-out questions: recall@1 {r['recall@1']:.2f}, recall@5 {r['recall@5']:.2f}, MRR {r['mrr']:.2f}"
        + changed
    )
    r = p["retrain"]
    if not r["ok"]:
        console.print(f"[red]retrain failed:[/] {r['error']}")
        return
    console.print(f"interactions: {p['interactions_imported']} imported")
    print_retrain(r)
    if p.get("asked"):
        console.print(
            f"\n[bold]asked the new champion (version {p['asked']['model_version']}):[/] {p['asked_question']}", highlight=False
        )
        print_answer(p["asked"])
    console.print(
        f"Dagster runs are in the instance at {p['dagster_home']} (`make ui` to browse); `ragtune models list` shows the registry"
    )


def print_import(p: dict) -> None:
    console.print(
        f"read {p['read']} records from {p['file']}: {p['added']} added, {p['already_present']} already in the log, "
        f"{p['forgotten']} of forgotten users refused ({p['total']} in total)"
    )
    for bad in p["bad_lines"]:
        console.print(f"[yellow]skipped[/] line {bad['line']}: {bad['reason']}")


def print_records(p: dict) -> None:
    kind = "curated" if p["curated"] else "logged"
    table = Table(title=f"{len(p['records'])} of {p['total']} {kind} interactions, newest first")
    for column in ("id", "ts", "user", "feedback", "question", "answer"):
        table.add_column(column, no_wrap=True, overflow="ellipsis", max_width=40 if column in ("question", "answer") else None)
    for r in p["records"]:
        feedback = (
            r.get("source") if p["curated"] else (r.get("feedback") or "-") + (" +correction" if r.get("correction") else "")
        )
        table.add_row(r["id"][:12], r["ts"][:19], r["user"], feedback, r["question"][:120], r["answer"][:120])
    console.print(table)


def print_curation(p: dict) -> None:
    console.print(f"curated {p['kept']} of {p['input']} interactions (run {p['run_id'][:8]}); snapshot {p['snapshot']}")
    for reason, n in sorted(p["dropped"].items()):
        console.print(f"  dropped {n:>5}  {reason.replace('_', ' ')}")
    for kind, n in sorted(p["redactions"].items()):
        console.print(f"  redacted {n:>4}  {kind}")
    quarantined = p.get("quarantined") or []
    if quarantined:
        console.print(f"  quarantined {len(quarantined)} (PII left after scrubbing; text not kept, sha256 of it is):")
        for q in quarantined:
            console.print(f"    {q['id']}  {', '.join(q['kinds'])}  {q['sha256'][:16]}")
    if p.get("error"):
        console.print(f"[red]blocked:[/] {p['error']}")


def print_forget(p: dict) -> None:
    console.print(
        f"forgot user {p['user']!r}: {p['interactions_removed']} logged, {p['curated_removed']} curated and "
        f"{p['dataset_rows_removed']} training rows removed"
    )
    if p["versions_flagged"]:
        console.print(f"adapter versions flagged for retraining: {', '.join(p['versions_flagged'])}")
    if p.get("embedder_versions_flagged"):
        console.print(f"embedder versions flagged for retraining: {', '.join(p['embedder_versions_flagged'])}")
    for model, owed in p.get("unflagged", {}).items():
        print(
            f"error: could not flag the versions of {model} trained on datasets {', '.join(owed['datasets'])}: "
            f"{owed['error']}. The data is erased; run `ragtune forget` again when the registry is back.",
            file=sys.stderr,
        )


def print_history(p: dict) -> None:
    if not p["moves"]:
        console.print(f"no alias moves recorded for {p['registered_model']} yet")
    else:
        table = Table(title=f"alias moves of {p['registered_model']}")
        for column in ("time (UTC)", "alias", "from", "to", "reason", "run"):
            table.add_column(column, overflow="fold")
        for m in p["moves"]:
            table.add_row(m["at"][:19], m["alias"], m["from"] or "-", m["to"] or "-", m["reason"], (m.get("run_id") or "")[:8])
        console.print(table)
    if "at" in p:
        console.print(f"champion at {p['at']}: {p['champion_at'] or 'none (the base model served)'}")


def print_models(p: dict) -> None:
    if not p["versions"]:
        console.print(f"no versions of {p['registered_model']} yet: run the adapter_retrain job (`ragtune demo`)")
        return
    table = Table(title=f"registered model {p['registered_model']}")
    for column in ("version", "aliases", "created", "dataset", "index", "curated", "train loss", "id match", "gate", "flags"):
        table.add_column(column)
    for v in p["versions"]:
        t = v["tags"]
        flags = "needs retrain" if t.get("needs_retrain") == "true" else ""
        table.add_row(
            v["version"],
            ", ".join(v["aliases"]) or "-",
            v["created"],
            t.get("dataset_hash", "-"),
            t.get("index_version", "-"),
            t.get("curated_records", "-"),
            t.get("train_loss", "-"),
            t.get("eval_identifier_match", "-"),
            t.get("gate_verdict", "-"),
            flags,
        )
    console.print(table)


# Rows of the metrics tables, in this order; a metric no candidate was measured on is left out. An indented row is
# the metric above it on the answer probes whose gold document was in the context (retrieval does not cap it);
# for identifier match, also told apart there (evaluation.metrics.identifier_shown).
METRIC_ROWS = (
    ("identifier_match", "id match"),
    ("identifier_match_gold_in_context", "  gold, told apart"),
    ("exact_match", "exact match"),
    ("token_f1", "token F1"),
    ("format_validity", "format valid"),
    ("format_validity_unconstrained", "  unconstrained"),
    ("citation_accuracy", "citations"),
    ("citation_accuracy_gold_in_context", "  gold in context"),
    ("false_abstention", "false abstention"),
    ("false_abstention_gold_in_context", "  gold in context"),
    ("abstention", "abstains, off-topic"),
    ("abstention_by_model", "  by the model"),
    ("abstained_gold_missed", "abstains, gold missed"),
    ("below_floor", "declined, below floor"),
    ("adherence", "adheres to an edit"),
    ("gold_in_context", "gold in context, share"),
    ("latency_p50_ms", "latency p50 ms"),
    ("latency_p95_ms", "latency p95 ms"),
    ("tokens_mean", "tokens"),
)
SHORT_LABELS = {
    "base_rag": "base",
    "champion_rag": "champion",
    "challenger_rag": "challenger",
    "challenger_no_rag": "challenger no RAG",
}


def figure(key: str, value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}" if key.endswith("_ms") else f"{value:.2f}"


def metrics_table(metrics: dict, title: str) -> Table:
    """One column per candidate, one row per metric: readable at 80 columns with four candidates."""
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for name in metrics:
        table.add_column(SHORT_LABELS.get(name, name), justify="right")
    for key, label in METRIC_ROWS:
        if any(key in values for values in metrics.values()):
            table.add_row(label, *(figure(key, values.get(key)) for values in metrics.values()))
    return table


def comparison_table(comparison: dict) -> Table:
    """The paired comparison the gate decides on: both means, the difference and its 95% interval, items paired."""
    incumbent = SHORT_LABELS.get(comparison["incumbent"], comparison["incumbent"])
    table = Table(
        title=f"challenger vs {incumbent}, paired over the same items",
        title_justify="left",
        caption=comparison["method"],
        caption_justify="left",
    )
    for column in ("metric", incumbent, "challenger", "difference [95%]", "n"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key, label in METRIC_ROWS:
        m = comparison["metrics"].get(key)
        if m:
            table.add_row(
                label,
                f"{m['incumbent']:.2f}",
                f"{m['challenger']:.2f}",
                f"{m['diff']:+.2f} [{m['low']:+.2f}, {m['high']:+.2f}]",
                str(m["n"]),
            )
    return table


def print_metrics(e: dict, title: str) -> None:
    console.print(metrics_table(e["metrics"], title))
    if e.get("comparison"):
        console.print(comparison_table(e["comparison"]))


OUTCOME_STYLES = {
    "passed": "[green]passed[/]",
    "worse": "[red]rejected: worse[/]",
    "not_enough_evidence": "[yellow]rejected: not enough evidence[/]",
}
REASON_STYLES = {"FAIL": "red", "uncertain": "yellow", "ok": "green"}


def print_verdict(verdict: dict | None, released: bool | None = None) -> None:
    if not verdict:
        return
    outcome = verdict.get("outcome") or ("passed" if verdict["passed"] else "")
    head = OUTCOME_STYLES.get(outcome, "[green]passed[/]" if verdict["passed"] else "[red]rejected[/]")
    action = "" if released is None else (" -> released as champion" if released else " -> champion unchanged")
    console.print(f"release gate: {head}{action}")
    reasons = Table.grid(padding=(0, 1))  # a wrapped reason stays in its column
    reasons.add_column(no_wrap=True)
    reasons.add_column()
    for reason in verdict["reasons"]:
        status, _, text = reason.partition(" ")
        reasons.add_row(f"[{REASON_STYLES.get(status, 'default')}]{status}[/]", Text(text))
    console.print(Padding(reasons, (0, 0, 0, 2)))


def print_evaluation(p: dict) -> None:
    r = p["retrieval"]
    recall = next((f"{k} {v:.2f}" for k, v in r.items() if k.startswith("recall@")), "")
    print_metrics(p, f"{p['items']} items of {Path(p['set']).name}, index version {p['index_version']}")
    console.print(f"retrieval: {recall}, MRR {r['mrr']:.2f}")
    for line in p["skipped"]:
        console.print(f"[yellow]skipped[/] {line}")
    print_verdict(p.get("verdict"))


def print_embedder(e: dict) -> None:
    if not e["trained"]:
        console.print(f"embedder: not trained ({e['reason']})")
        return
    recall = next((m for name, m in e["metrics"].items() if name.startswith("recall@")), None)
    evidence = (
        f"recall {recall['incumbent']:.3f} -> {recall['challenger']:.3f} [95% {recall['low']:+.3f}, {recall['high']:+.3f}], "
        if recall
        else ""
    )
    state = "swapped in (blue/green)" if e["switched"] else "kept the live one"
    console.print(f"embedder: version {e['version']} on {e['pairs']} pairs, {evidence}{e['outcome']}: {state}")


def print_retrain(p: dict) -> None:
    c = p.get("curation") or {}
    if c:
        console.print(f"curated {c['kept']} of {c['input']} interactions")
    if "embedder" in p:
        print_embedder(p["embedder"])
    if "raft" in p:
        d = p["raft"]
        console.print(f"RAFT dataset {d['digest']}: {d['train']} train / {d['validation']} validation examples")
        floor = d.get("relevance_floor")
        console.print(
            f"relevance floor {floor['value']:.3f}: {floor['quantile']:.0%} of {floor['questions']} training questions' "
            "contexts are less related; below it the assistant declines without asking the model"
            if floor
            else "relevance floor: none (turned off, or too few training questions to measure one)"
        )
    if "adapter" in p:
        a = p["adapter"]
        console.print(
            f"LoRA adapter: version {a['model_version']} registered, {int(a['steps'])} steps, "
            f"train loss {a['train_loss']:.3f}, {a['train_seconds']:.0f} s"
        )
    if "evaluation" in p:
        e = p["evaluation"]
        print_metrics(e, f"evaluation on {e['items']} held-out items (index version {e['index_version']})")
    print_verdict(p.get("verdict"), p.get("released"))
    aliases = ", ".join(f"{k} = {v}" for k, v in sorted(p.get("aliases", {}).items())) or "none"
    console.print(f"aliases: {aliases}")
