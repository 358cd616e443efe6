"""Serving: a real `ragtune serve` process on loopback, asked over HTTP (no mocks of the HTTP layer).

One server for the module, on a data home with a small real index (12 APIBench documents
plus one restricted to the finance group), two registered real LoRA adapters, and small
limits so the queue and the validation rules are reachable: 1 worker, 1 waiting, 16 new
tokens, questions up to 300 characters, bodies up to 2 KiB, champion checked every 0.5 s.
"""

import json
import threading
import time

import httpx
import pytest
from conftest import PAYROLL, SECRET, make_adapter, register_versions, serve_in_background, small_served_home

from ragtune import registry
from ragtune.behaviour.interactions import InteractionLog
from ragtune.knowledge.retriever import Hit, Retriever
from ragtune.knowledge.store import ChunkStore
from ragtune.serving.answerer import resolve_citations

OUTSIDER_QUESTIONS = ["What is the payroll export key?", "Which code do I need to export the monthly salary file to the bank?"]
TIMEOUT = 30  # seconds a client waits for a quick endpoint on a loaded machine
LIMITS = {
    "RAGTUNE_SERVE_WORKERS": "1",
    "RAGTUNE_SERVE_QUEUE": "1",
    "RAGTUNE_SERVE_MAX_NEW_TOKENS": "16",
    "RAGTUNE_SERVE_MAX_QUESTION_CHARS": "300",
    "RAGTUNE_SERVE_MAX_BODY_BYTES": "2048",
    "RAGTUNE_SERVE_RELOAD_SECONDS": "0.5",
}


@pytest.fixture(scope="module")
def served(tmp_path_factory, embedder, base_model):
    """(base url, settings, registered versions) of a running server; stopped after the module."""
    root = tmp_path_factory.mktemp("serve")
    settings = small_served_home(root, embedder, base_model, 12, {"payroll.md": PAYROLL})
    adapter = make_adapter(base_model, root / "adapter")
    versions = register_versions(settings, ["a", "b"], root / "unused", adapter=adapter)
    for url in serve_in_background(settings, base_model, root, LIMITS):
        assert httpx.get(f"{url}/healthz", timeout=TIMEOUT).json()["status"] == "ok"
        yield url, settings, versions


def ask(url: str, question: str, **extra) -> httpx.Response:
    return httpx.post(f"{url}/v1/ask", json={"question": question, **extra}, timeout=120)


def wait_for_version(url: str, version: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:  # the server may be busy loading the new model or generating
            if httpx.get(f"{url}/healthz", timeout=TIMEOUT).json()["model_version"] == version:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the server did not switch to {version}: {httpx.get(f'{url}/healthz').json()}")


def test_citations_resolve_only_against_what_the_caller_retrieved():
    hits = [Hit("a", "a-1", "A", "text of a " * 80, 0.9), Hit("a", "a-2", "A", "more", 0.5), Hit("b", "b-1", "B", "bee", 0.4)]
    citations, dropped = resolve_citations(["a", "secret-doc", "b", "a"], hits)
    assert [(c.doc_id, c.chunk_id) for c in citations] == [("a", "a-1"), ("b", "b-1")] and dropped == 1
    assert citations[0].quote.endswith("…") and len(citations[0].quote) <= 300


def test_ask_feedback_and_health(served):
    url, settings, _ = served
    health = httpx.get(f"{url}/healthz", timeout=TIMEOUT).json()
    assert health["status"] == "ok" and health["model_version"] == "base" and health["index_version"] != "none"
    assert health["queue"] == {"admitted": 0, "limit": 2, "workers": 1}

    response = ask(url, "How can I classify images with a vision transformer?", user="ana")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= {"id", "answer", "citations", "model_version", "index_version", "latency_ms"}
    assert body["model_version"] == "base" and body["index_version"] == health["index_version"]
    assert body["answer"] and body["latency_ms"] >= body["retrieval_ms"] > 0
    for citation in body["citations"]:
        assert set(citation) == {"doc_id", "chunk_id", "title", "quote"} and citation["quote"]

    feedback = httpx.post(
        f"{url}/v1/feedback",
        json={"id": body["id"], "rating": "down", "correction": "Use pipeline('image-classification')."},
        timeout=TIMEOUT,
    )
    assert feedback.status_code == 200 and feedback.json()["ok"]
    assert httpx.post(f"{url}/v1/feedback", json={"id": "no-such-id", "rating": "up"}, timeout=TIMEOUT).status_code == 404

    record = next(r for r in InteractionLog(settings.interactions_db).records() if r["id"] == body["id"])
    assert record["user"] == "ana" and record["answer"] == body["answer"] and record["model_version"] == "base"
    assert record["index_version"] == body["index_version"] and record["latency_ms"] == body["latency_ms"]
    assert record["feedback"] == "down" and record["correction"] == "Use pipeline('image-classification')."
    assert record["citations"] == [{"doc_id": c["doc_id"], "chunk_id": c["chunk_id"]} for c in body["citations"]]


@pytest.mark.parametrize(
    "payload, status, mentions",
    [
        ({}, 422, "question"),
        ({"question": 5}, 422, "question"),
        ({"question": "ok?", "groups": "finance"}, 422, "groups"),
        ({"question": "ok?", "user": ["x"]}, 422, "user"),
        ({"question": "ok?", "role": "admin"}, 422, "role"),
        ({"question": "   "}, 422, "empty"),
        ({"question": "why? " * 70}, 422, "limit is 300"),
    ],
)
def test_bad_ask_requests_get_clear_errors(served, payload, status, mentions):
    url, _, _ = served
    response = httpx.post(f"{url}/v1/ask", json=payload, timeout=TIMEOUT)
    assert response.status_code == status
    assert mentions in json.dumps(response.json())


def test_malformed_oversized_and_bad_feedback_bodies(served):
    url, _, _ = served
    broken = httpx.post(f"{url}/v1/ask", content=b'{"question": ', headers={"content-type": "application/json"}, timeout=TIMEOUT)
    assert broken.status_code == 400 and broken.json()["error"] == "malformed JSON body"
    huge = httpx.post(
        f"{url}/v1/ask",
        content=json.dumps({"question": "x" * 5000}).encode(),
        headers={"content-type": "application/json"},
        timeout=TIMEOUT,
    )
    assert huge.status_code == 413 and "2048 bytes" in huge.json()["error"]

    def chunked():
        for _ in range(6):
            yield b" " * 512
        yield b'{"question": "ok?"}'

    streamed = httpx.post(f"{url}/v1/ask", content=chunked(), headers={"content-type": "application/json"}, timeout=TIMEOUT)
    assert streamed.status_code == 413
    bad_rating = httpx.post(f"{url}/v1/feedback", json={"id": "x", "rating": "meh"}, timeout=TIMEOUT)
    assert bad_rating.status_code == 422 and "rating" in bad_rating.text
    assert httpx.post(f"{url}/v1/feedback", json={"rating": "up"}, timeout=TIMEOUT).status_code == 422


def test_a_full_queue_answers_503_with_retry_after_and_loses_nothing(served):
    url, settings, _ = served
    before = InteractionLog(settings.interactions_db).count()
    barrier, responses = threading.Barrier(5), []

    def client(n):
        barrier.wait()
        responses.append(ask(url, f"Which model translates English to French, variant {n}?"))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in responses)
    assert len(responses) == 5 and set(statuses) == {200, 503}, statuses
    assert statuses.count(200) >= 2  # one generating, one waiting
    for r in responses:
        if r.status_code == 503:
            assert int(r.headers["retry-after"]) >= 1 and "busy" in r.json()["error"]
    # every admitted request was answered and logged; refused ones were not half-done
    assert InteractionLog(settings.interactions_db).count() - before == statuses.count(200)


def test_a_restricted_document_never_reaches_an_outsider(served, embedder):
    url, settings, _ = served
    store = ChunkStore(settings.lancedb_uri, settings.table_name)
    retriever = Retriever(store, embedder)
    for question in OUTSIDER_QUESTIONS:  # the control: for its group the document is the top hit
        assert retriever.search(question, k=3, groups=["finance"])[0].doc_id == "payroll.md"
    for question in OUTSIDER_QUESTIONS:
        for groups in ([], ["engineering"]):
            body = ask(url, question, user="outsider", groups=groups).json()
            assert SECRET not in json.dumps(body) and "payroll.md" not in body["retrieved"]
            assert all(c["doc_id"] != "payroll.md" for c in body["citations"])
    for record in InteractionLog(settings.interactions_db).records():
        if record["user"] == "outsider":
            assert SECRET not in record["answer"] and all(c["doc_id"] != "payroll.md" for c in record["citations"])
    insider = ask(url, OUTSIDER_QUESTIONS[0], user="fin", groups=["finance"]).json()
    assert insider["retrieved"][0] == "payroll.md"  # the server passes the caller's groups to retrieval


def test_promotion_and_rollback_switch_the_model_without_dropping_requests(served):
    url, settings, (v1, v2) = served
    uri, name = settings.tracking_uri, settings.registered_model
    registry.promote(uri, name, v1, reason="first release")
    wait_for_version(url, v1)
    assert ask(url, "Which model summarises news articles?").json()["model_version"] == v1

    in_flight = []
    worker = threading.Thread(target=lambda: in_flight.append(ask(url, "Which model detects objects in photos?")))
    worker.start()
    time.sleep(0.2)  # the request is being answered by v1 while the alias moves
    registry.promote(uri, name, v2, reason="second release")
    wait_for_version(url, v2)
    worker.join()
    assert in_flight[0].status_code == 200 and in_flight[0].json()["model_version"] in (v1, v2)
    assert ask(url, "Which model answers questions about tables?").json()["model_version"] == v2

    registry.rollback(uri, name, reason="bad answers")
    wait_for_version(url, v1)
    assert ask(url, "Which model transcribes speech?").json()["model_version"] == v1
    assert httpx.get(f"{url}/healthz", timeout=TIMEOUT).json()["reload_error"] is None


def test_a_registry_blip_keeps_the_champion_serving_and_shows_in_healthz(served):
    """The registry's store turns unreadable for a while: the server keeps its champion, never swaps to the base
    model, says so in /healthz, and recovers when the registry is back."""
    url, settings, _ = served
    champion = registry.aliases(settings.tracking_uri, settings.registered_model).get(registry.CHAMPION)
    if champion is None:
        champion = served[2][0]
        registry.promote(settings.tracking_uri, settings.registered_model, champion, reason="serving for the blip test")
    wait_for_version(url, champion)
    database = settings.home_dir / "mlflow.db"
    header = database.read_bytes()[:100]
    with open(database, "r+b") as f:  # SQLite's header gone: every read fails, "file is not a database"
        f.write(b"\0" * 100)
    try:
        deadline = time.time() + 60
        health = {}
        while time.time() < deadline and not (health.get("reload_error") or ""):
            time.sleep(0.3)
            health = httpx.get(f"{url}/healthz", timeout=TIMEOUT).json()
        assert "RegistryUnavailable" in health["reload_error"], health
        assert health["status"] == "degraded" and health["model_version"] == champion
        answered = ask(url, "Which model summarises news articles?")
        assert answered.status_code == 200 and answered.json()["model_version"] == champion
    finally:
        with open(database, "r+b") as f:
            f.write(header)
    deadline = time.time() + 60
    while time.time() < deadline and httpx.get(f"{url}/healthz", timeout=TIMEOUT).json()["reload_error"]:
        time.sleep(0.3)
    health = httpx.get(f"{url}/healthz", timeout=TIMEOUT).json()
    assert health["status"] == "ok" and health["model_version"] == champion


def test_the_champion_history_agrees_with_the_serving_log(served, capsys, monkeypatch):
    """Every logged answer names the model that `ragtune models history --at <its time>` says was champion."""
    from datetime import datetime, timedelta

    from ragtune.cli import main as cli

    url, settings, (v1, v2) = served
    uri, name = settings.tracking_uri, settings.registered_model
    swap_window = timedelta(seconds=15)  # the watcher's poll and the new model's load
    if registry.aliases(uri, name).get(registry.CHAMPION) is None:
        registry.promote(uri, name, v1, reason="history test")
    first = registry.aliases(uri, name)[registry.CHAMPION]
    other = v2 if first == v1 else v1
    wait_for_version(url, first)
    assert ask(url, "Which model summarises news articles?").status_code == 200
    registry.promote(uri, name, other, reason="history test")
    wait_for_version(url, other)
    assert ask(url, "Which model detects objects in photos?").status_code == 200
    registry.rollback(uri, name, reason="history test")
    wait_for_version(url, first)
    assert ask(url, "Which model transcribes speech?").status_code == 200
    history = registry.alias_history(uri, name)
    moves = [datetime.fromisoformat(m["at"]) for m in history if m["alias"] == registry.CHAMPION]
    assert len(moves) >= 3
    records = InteractionLog(settings.interactions_db).records()
    for record in records:
        at = datetime.fromisoformat(record["ts"])  # logged when answered
        since = at - timedelta(milliseconds=record["latency_ms"]) - swap_window  # the server may lag the alias
        champions = {registry.champion_at(history, since)}
        champions |= {
            m["to"] for m in history if m["alias"] == registry.CHAMPION and since <= datetime.fromisoformat(m["at"]) <= at
        }
        assert record["model_version"] in {c or "base" for c in champions}, (record, champions)
    assert {r["model_version"] for r in records} >= {v1, v2}
    monkeypatch.setenv("RAGTUNE_HOME", str(settings.home_dir))
    capsys.readouterr()
    assert cli(["models", "history", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["to"] for m in listed["moves"] if m["alias"] == registry.CHAMPION][-3:] == [
        m["to"] for m in history if m["alias"] == registry.CHAMPION
    ][-3:]
    first = next(m for m in history if m["alias"] == registry.CHAMPION)
    assert cli(["models", "history", "--at", first["at"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["champion_at"] == first["to"]


def test_answers_marked_up_reach_the_next_curation_run(served):
    from pipelines.runner import run_job

    url, settings, _ = served
    questions = ["Which model should I use to caption an image?", "How do I fill in a masked word in a sentence?"]
    ids = [ask(url, q, user="loop").json()["id"] for q in questions]
    corrected = "Use pipeline('image-to-text', model='nlpconnect/vit-gpt2-image-captioning')."
    assert (
        httpx.post(
            f"{url}/v1/feedback", json={"id": ids[0], "rating": "up", "correction": corrected}, timeout=TIMEOUT
        ).status_code
        == 200
    )
    assert httpx.post(f"{url}/v1/feedback", json={"id": ids[1], "rating": "up"}, timeout=TIMEOUT).status_code == 200

    outcome = run_job(settings, "interaction_curation")
    assert outcome.success, outcome.error
    curated = {
        json.loads(line)["id"]: json.loads(line) for line in (settings.datasets_dir / "curated.jsonl").read_text().splitlines()
    }
    assert curated[ids[0]]["answer"] == corrected and curated[ids[0]]["source"] == "correction"
    record = next(r for r in InteractionLog(settings.interactions_db).records() if r["id"] == ids[1])
    from ragtune.behaviour.curation import CurationPolicy

    too_short = len(record["answer"].strip()) < CurationPolicy().min_answer_chars  # a bounded answer can be terse
    if record["answer"].startswith("The model's reply could not be read") or too_short:  # not training data
        assert ids[1] not in curated
    else:
        assert curated[ids[1]]["source"] == "feedback"


def test_ask_and_feedback_from_the_command_line(served, monkeypatch, capsys):
    from ragtune.cli import main as cli

    _, settings, _ = served
    monkeypatch.setenv("RAGTUNE_HOME", str(settings.home_dir))
    monkeypatch.setenv("RAGTUNE_BASE_MODEL", settings.base_model)
    monkeypatch.setenv("RAGTUNE_SERVE_MAX_NEW_TOKENS", "16")

    def run(*argv) -> tuple[int, dict]:
        capsys.readouterr()
        code = cli([*argv, "--json"])
        return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    code, answer = run("ask", OUTSIDER_QUESTIONS[1], "--user", "cli-user", "--groups", "finance")
    champion = registry.resolve(settings.tracking_uri, settings.registered_model, registry.CHAMPION) or "base"
    assert code == 0 and answer["ok"] and answer["model_version"] == champion and answer["retrieved"][0] == "payroll.md"
    code, done = run("feedback", answer["id"], "up", "--correction", "Ask the finance team for the export key.")
    assert code == 0 and done["rating"] == "up"
    record = next(r for r in InteractionLog(settings.interactions_db).records() if r["id"] == answer["id"])
    assert record["user"] == "cli-user" and record["feedback"] == "up" and record["correction"].startswith("Ask the finance")
    code, missing = run("feedback", "no-such-id", "down")
    assert code == 2 and "no interaction with id 'no-such-id'" in missing["error"]
    code, too_long = run("ask", "why? " * 300)
    assert code == 2 and "the limit is 1000" in too_long["error"]


def test_with_shadowing_off_nothing_extra_runs(served):
    url, settings, _ = served
    assert ask(url, "How do I translate English to German?").status_code == 200
    health = httpx.get(f"{url}/healthz", timeout=TIMEOUT).json()
    assert health["shadow"] == {
        "share": 0.0,
        "challenger": None,
        "answered": 0,
        "skipped_busy": 0,
        "no_challenger": 0,
        "failed": 0,
    }
    assert not [r for r in InteractionLog(settings.interactions_db).records() if r["shadow_of"]]
