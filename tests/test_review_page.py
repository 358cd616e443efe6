"""The server's pages in a real browser: ask, rate, correct and review, on a real `ragtune serve` process.

Headless Chromium (Debian's packages, `make browser`) drives the pages over loopback. The data home has
12 APIBench documents, one restricted to the finance group, and one whose title and text hold markup
that would run if a page failed to escape it. The model is the bundled base model (no adapter released).
"""

import os
import shutil
from pathlib import Path

import httpx
import pytest
from conftest import DEMO, PAYROLL, SECRET, browser, serve_in_background, small_served_home

from ragtune.behaviour.curation import curate
from ragtune.behaviour.interactions import InteractionLog
from ragtune.settings import load_settings

TOKEN = "review-token-7f3a"
MARKUP = """---
title: Zyxwidget guide <script>window.__pwned = 1</script>
---
# Zyxwidget calibration

To calibrate the zyxwidget, hold the reset button for five seconds. <img src=x onerror="window.__pwned = 2">
<script>window.__pwned = 3</script>
"""
SHOTS = ("ask-answer", "review-queue")


@pytest.fixture(scope="module")
def site(tmp_path_factory, embedder, base_model):
    """(base url, settings) of a running server with reviewing on; stopped after the module."""
    root = tmp_path_factory.mktemp("pages")
    settings = small_served_home(root, embedder, base_model, 12, {"payroll.md": PAYROLL, "zyxwidget.md": MARKUP})
    env = {
        "RAGTUNE_SERVE_MAX_NEW_TOKENS": "24",
        "RAGTUNE_REVIEW_TOKEN": TOKEN,
        "RAGTUNE_REVIEW_LOW_SIMILARITY": "0.99",  # every answer counts as poorly retrieved: the filter must list it
    }
    for url in serve_in_background(settings, base_model, root, env):
        yield url, settings


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    chrome = browser(tmp_path_factory.mktemp("chrome-profile"))
    yield chrome
    chrome.quit()


def by_id(driver, name: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, name)


def ask_in_browser(driver, url: str, question: str, groups: str = "", user: str = "ana") -> str:
    """Ask on `/`; the interaction id the answer page carries."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{url}/")
    by_id(driver, "question").send_keys(question)
    by_id(driver, "user").send_keys(user)
    by_id(driver, "groups").send_keys(groups)
    by_id(driver, "ask").click()
    WebDriverWait(driver, 180).until(lambda d: d.find_elements(By.ID, "answer") or d.find_elements(By.ID, "error"))
    assert not driver.find_elements(By.ID, "error"), by_id(driver, "error").text
    return driver.find_element(By.CSS_SELECTOR, "#rate input[name=id]").get_attribute("value")


def submitted(driver, button, *ids: str) -> None:
    """Click a submit button and wait for the next page: one that has any of `ids`, or an error that says why."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.expected_conditions import staleness_of
    from selenium.webdriver.support.ui import WebDriverWait

    button_id = button.get_attribute("id")
    page = driver.find_element(By.TAG_NAME, "html")
    try:
        button.click()
        WebDriverWait(driver, 120).until(staleness_of(page))
    except WebDriverException as error:
        # Chromium under load can lose the node between finding and clicking it ("Node with given id does
        # not belong to the document"): find the button again and click it, unless the page moved on already
        if "does not belong to the document" not in str(error) or not button_id:
            raise
        again = driver.find_elements(By.ID, button_id)
        if again:
            page = driver.find_element(By.TAG_NAME, "html")
            again[0].click()
            WebDriverWait(driver, 120).until(staleness_of(page))
    WebDriverWait(driver, 120).until(lambda d: any(d.find_elements(By.ID, i) for i in (*ids, "error")))
    errors = driver.find_elements(By.ID, "error")
    assert "error" in ids or not errors, errors[0].text if errors else ""


def records_by_id(settings) -> dict[str, dict]:
    return {r["id"]: r for r in InteractionLog(settings.interactions_db).records()}


@pytest.mark.integration
@pytest.mark.slow
def test_ask_rate_correct_and_review_in_a_browser(site, driver, tmp_path):
    from selenium.webdriver.common.by import By

    url, settings = site
    shots = {}

    # ask and rate up
    liked = ask_in_browser(driver, url, "How do I classify images into categories?")
    assert driver.find_elements(By.CSS_SELECTOR, "details.citation") or driver.find_elements(By.ID, "no-citations")
    shots["ask-answer"] = tmp_path / "ask-answer.png"
    driver.save_screenshot(str(shots["ask-answer"]))
    submitted(driver, by_id(driver, "up"), "thanks")
    assert liked in by_id(driver, "thanks").text
    assert records_by_id(settings)[liked]["feedback"] == "up"

    # ask, correct and choose the documents that answer (among those shown)
    corrected = ask_in_browser(driver, url, "Which model translates English text to French?")
    served = [b.get_attribute("value") for b in driver.find_elements(By.CSS_SELECTOR, "#rate input[name=docs]")]
    assert served, "the answer page offers its documents to choose from"
    driver.find_element(By.CSS_SELECTOR, f"#rate input[name=docs][value='{served[-1]}']").click()
    by_id(driver, "correction").send_keys("Use the T5 translation pipeline: pipeline('translation_en_to_fr').")
    submitted(driver, by_id(driver, "send-correction"), "thanks")
    assert "with your correction" in by_id(driver, "thanks").text
    record = records_by_id(settings)[corrected]
    assert (record["feedback"], record["gold_citations"], record["reviewer"]) == ("down", [served[-1]], None)

    # the outsider never sees the restricted document, on the page or in its quotes; the finance group does
    def served_docs() -> list[str]:
        return [b.get_attribute("value") for b in driver.find_elements(By.CSS_SELECTOR, "#rate input[name=docs]")]

    payroll_question = "What is the payroll export key for the monthly salary file?"
    outsider = ask_in_browser(driver, url, payroll_question)
    assert SECRET not in driver.page_source and "payroll.md" not in served_docs()
    insider = ask_in_browser(driver, url, payroll_question, groups="finance")
    assert "payroll.md" in served_docs()

    # markup in a question and in a document shows as text, never runs
    ask_in_browser(driver, url, "How do I calibrate the zyxwidget? <script>window.__pwned = 4</script>")
    assert driver.execute_script("return window.__pwned") is None
    assert "<script>window.__pwned = 4</script>" in by_id(driver, "question").get_attribute("value")

    # reviewing: off without the token, on with it
    driver.get(f"{url}/review")
    by_id(driver, "name").send_keys("rita")
    by_id(driver, "token").send_keys("wrong")
    submitted(driver, by_id(driver, "sign-in"), "error")
    assert "not the reviewer token" in by_id(driver, "error").text
    by_id(driver, "name").send_keys("rita")
    by_id(driver, "token").send_keys(TOKEN)
    submitted(driver, by_id(driver, "sign-in"), "reviewer")
    assert by_id(driver, "reviewer").text == "rita"
    assert driver.execute_script("return window.__pwned") is None  # the zyxwidget document is listed, as text
    assert "Zyxwidget guide <script>" in driver.find_element(By.TAG_NAME, "body").text

    # the filters: down-voted lists the corrected answer only; low retrieval (threshold 0.99) lists them all
    driver.get(f"{url}/review?show=down")
    listed = {e.get_attribute("id") for e in driver.find_elements(By.CSS_SELECTOR, "div.item")}
    assert listed == {f"item-{corrected}"}
    driver.get(f"{url}/review?show=low_retrieval")
    listed = {e.get_attribute("id") for e in driver.find_elements(By.CSS_SELECTOR, "div.item")}
    assert {f"item-{i}" for i in (liked, corrected, outsider, insider)} <= listed

    # review the liked answer: name two documents (one ticked, one typed) and correct it
    driver.get(f"{url}/review?show=unreviewed")
    shots["review-queue"] = tmp_path / "review-queue.png"
    driver.save_screenshot(str(shots["review-queue"]))
    item = by_id(driver, f"item-{liked}")
    boxes = item.find_elements(By.CSS_SELECTOR, "input[name=docs]")
    boxes[0].click()
    ticked = boxes[0].get_attribute("value")
    typed = next(p.stem for p in sorted((DEMO / "docs").glob("*.md"))[:12] if p.stem != ticked)
    item.find_element(By.NAME, "other_docs").send_keys(typed)
    item.find_element(By.NAME, "correction").send_keys("Use google/vit-base-patch16-224 with the image-classification pipeline.")
    submitted(driver, item.find_element(By.CSS_SELECTOR, "button[value=correct]"), "done")
    assert liked in by_id(driver, "done").text
    assert not driver.find_elements(By.ID, f"item-{liked}")  # reviewed: off the unreviewed queue

    # an unknown document is refused with the reason, and nothing is recorded
    driver.get(f"{url}/review?show=all")
    other = by_id(driver, f"item-{corrected}")
    other.find_element(By.NAME, "other_docs").send_keys("no-such-document")
    submitted(driver, other.find_element(By.CSS_SELECTOR, "button[value=approve]"), "error")
    assert "not in the index: no-such-document" in by_id(driver, "error").text

    # the review is an event with the reviewer's name, and the next curation trains on it with its documents
    log = InteractionLog(settings.interactions_db)
    record = records_by_id(settings)[liked]
    assert (record["reviewer"], record["feedback"], record["gold_citations"]) == ("rita", "up", [ticked, typed])
    curated = {r["id"]: r for r in curate(log.records(), log.forgotten()).records}
    assert curated[liked]["answer"].startswith("Use google/vit-base-patch16-224")
    assert curated[liked]["gold_doc_ids"] == [ticked, typed]
    assert curated[corrected]["gold_doc_ids"] == [served[-1]]
    assert records_by_id(settings)[corrected]["reviewer"] is None  # the refused review left it as it was

    assert all(p.stat().st_size > 10_000 for p in shots.values())
    if os.environ.get("RAGTUNE_SCREENSHOTS_DIR"):
        for name, shot in shots.items():
            shutil.copy(shot, Path(os.environ["RAGTUNE_SCREENSHOTS_DIR"]) / f"{name}.png")


@pytest.mark.integration
@pytest.mark.slow
def test_review_needs_the_token_and_the_api_keeps_feedback_to_served_documents(site):
    url, settings = site
    signed_out = httpx.get(f"{url}/review", timeout=30)
    assert signed_out.status_code == 401 and "Reviewer token" in signed_out.text
    forged = httpx.post(f"{url}/review/anything", data={"action": "approve"}, cookies={"ragtune_reviewer": "00:rita"})
    assert forged.status_code == 401
    answer = httpx.post(f"{url}/v1/ask", json={"question": "How do I summarise a long article?"}, timeout=120).json()
    refused = httpx.post(f"{url}/v1/feedback", json={"id": answer["id"], "rating": "up", "citations": ["payroll"]}, timeout=30)
    assert refused.status_code == 422 and "payroll" in refused.json()["error"]
    chosen = answer["retrieved"][:1]
    assert httpx.post(f"{url}/v1/feedback", json={"id": answer["id"], "rating": "up", "citations": chosen}, timeout=30).is_success
    assert records_by_id(settings)[answer["id"]]["gold_citations"] == chosen


def test_reviewing_is_off_without_a_configured_token(tmp_path):
    from fastapi.testclient import TestClient

    from ragtune.serving.answerer import Answerer, ModelSlot
    from ragtune.serving.server import create_app

    settings = load_settings(home=str(tmp_path / "home"))
    answerer = Answerer(settings, ModelSlot(settings, "unused", 16), InteractionLog(settings.interactions_db), 3)
    client = TestClient(create_app(answerer, settings, watch=False))  # no lifespan: nothing loads a model
    page = client.get("/review")
    assert page.status_code == 404 and "RAGTUNE_REVIEW_TOKEN" in page.text
    assert client.post("/review/login", data={"token": "", "name": "x"}).status_code == 404
    assert client.get("/").status_code == 200 and 'name="question"' in client.get("/").text


def test_the_review_queue_filters():
    from ragtune.serving.pages import review_queue

    def record(n, **extra):
        return {"id": str(n), "answer": "Use org/x.", "retrieved": [{"doc_id": "d", "similarity": 0.8}], **extra}

    records = [
        record(1, feedback="down"),
        record(2, answer="Not covered: the documents do not answer this question."),
        record(3, fallback=True),
        record(4, retrieved=[{"doc_id": "d", "similarity": 0.1}]),
        record(5, reviewer="rita"),
        record(6, shadow_of="1"),  # a shadow answer is never listed; this one agrees with 1 (same call, same citations)
        record(7, answer="Not covered: the documents do not answer this question.", shadow_of="3"),  # disagrees with 3
    ]
    ids = {
        show: [r["id"] for r, _ in review_queue(records, show, 0.35)]
        for show in ("down", "abstained", "fallback", "low_retrieval", "unreviewed", "disagreements", "all")
    }
    assert ids == {
        "down": ["1"],
        "abstained": ["2"],
        "fallback": ["3"],
        "low_retrieval": ["4"],
        "unreviewed": ["1", "2", "3", "4"],
        "disagreements": ["3"],
        "all": ["1", "2", "3", "4", "5"],
    }
