"""Human-readable output of the CLI's reports (the --json form is the report itself)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

console = Console()


def print_refresh(p: dict) -> None:
    table = Table(title=f"index refresh (run {p.get('run_id', '-')[:8]})", show_header=False)
    for key in ("docs_added", "docs_updated", "docs_unchanged", "docs_deleted", "chunks_embedded", "chunks_deleted", "chunks_total"):
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


def print_demo(p: dict) -> None:
    print_refresh(p["refresh"])
    r = p["retrieval"]
    console.print(
        f"demo data: {p['data']['documents']} documents, {p['data']['interactions']} interactions, "
        f"{p['data']['eval_items']} held-out questions"
    )
    console.print(f"retrieval on held-out questions: recall@1 {r['recall@1']:.2f}, recall@5 {r['recall@5']:.2f}, MRR {r['mrr']:.2f}")
    console.print(f"Dagster run {p['refresh']['run_id']} is in the instance at {p['dagster_home']} (`make ui` to browse)")
