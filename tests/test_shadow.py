"""Shadow answers: a real `ragtune serve` with shadowing on answers live questions again with the challenger,
after the caller has their answer, within the admission limits, logged and never shown.

One server for the module (1 worker, 1 waiting, 16 new tokens, every question shadowed) on a small real
index, with two real registered adapters: version 1 is the champion, version 2 the challenger.
"""

import threading
import time
from datetime import datetime, timedelta

import httpx
import pytest
from conftest import make_adapter, register_versions, serve_in_background, small_served_home

from ragtune import registry
from ragtune.behaviour.interactions import InteractionLog

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def shadowed(tmp_path_factory, embedder, base_model):
    root = tmp_path_factory.mktemp("shadow")
    settings = small_served_home(root, embedder, base_model, 8)
    champion, challenger = register_versions(
        settings, ["a", "b"], root / "unused", adapter=make_adapter(base_model, root / "lora")
    )
    registry.promote(settings.tracking_uri, settings.registered_model, champion, "test: the champion")
    registry.set_challenger(settings.tracking_uri, settings.registered_model, challenger)
    env = {
        "RAGTUNE_SERVE_WORKERS": "1",
        "RAGTUNE_SERVE_QUEUE": "1",
        "RAGTUNE_SERVE_MAX_NEW_TOKENS": "16",
        "RAGTUNE_SHADOW_SHARE": "1.0",
    }
    for url in serve_in_background(settings, base_model, root, env):
        yield url, settings, champion, challenger


def shadows_of(settings, live_id: str) -> list[dict]:
    return [r for r in InteractionLog(settings.interactions_db).records() if r["shadow_of"] == live_id]


def wait_for_shadow(settings, live_id: str, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = shadows_of(settings, live_id)
        if found:
            return found[0]
        time.sleep(0.3)
    pytest.fail(f"no shadow answer of {live_id} was logged")


def test_the_challenger_answers_after_the_caller_and_is_never_shown(shadowed):
    url, settings, champion, challenger = shadowed
    health = httpx.get(f"{url}/healthz", timeout=30).json()
    assert health["model_version"] == champion and health["shadow"]["challenger"] == challenger

    answer = httpx.post(f"{url}/v1/ask", json={"question": "How do I classify images?", "user": "ana"}, timeout=120).json()
    assert answer["model_version"] == champion  # the caller gets the champion's answer, and only that
    shadow = wait_for_shadow(settings, answer["id"])
    assert (shadow["model_version"], shadow["user"], shadow["question"]) == (challenger, "ana", "How do I classify images?")
    (live,) = InteractionLog(settings.interactions_db).records(ids=[answer["id"]])
    # the shadow started (its log time less its own latency) only after the live answer was logged, which
    # happens before the response is sent: it never ran on the caller's path
    started = datetime.fromisoformat(shadow["ts"]) - timedelta(milliseconds=shadow["latency_ms"])
    assert started >= datetime.fromisoformat(live["ts"]) and live["shadow_of"] is None
    assert [r["doc_id"] for r in shadow["retrieved"]] and shadow["id"] != answer["id"]


def test_shadowing_obeys_the_queue_and_never_fails_a_caller(shadowed):
    url, settings, _, _ = shadowed
    before = httpx.get(f"{url}/healthz", timeout=30).json()["shadow"]
    results: list[httpx.Response] = []

    def ask(question: str) -> None:
        results.append(httpx.post(f"{url}/v1/ask", json={"question": question}, timeout=180))

    # two callers at once fill the one worker and the one waiting place: the first one's shadow finds
    # the second still admitted and is skipped; nobody is refused because of shadows
    threads = [threading.Thread(target=ask, args=(q,)) for q in ("How do I translate text?", "How do I summarise text?")]
    for t in threads:
        t.start()
        time.sleep(0.2)
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200, 200]
    for r in results:  # whatever happened to the shadows, the callers' answers are the champion's
        assert r.json()["model_version"] == httpx.get(f"{url}/healthz", timeout=30).json()["model_version"]
    deadline = time.time() + 120
    while time.time() < deadline:
        after = httpx.get(f"{url}/healthz", timeout=30).json()["shadow"]
        if after["answered"] + after["skipped_busy"] - before["answered"] - before["skipped_busy"] >= 2:
            break
        time.sleep(0.3)
    assert after["skipped_busy"] > before["skipped_busy"]  # the first caller's shadow did not queue
    assert after["failed"] == 0
