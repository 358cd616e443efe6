"""The Dagster UI as a person uses it: `dagster dev` (what `make ui` runs) on loopback, driven over its GraphQL API.

The webserver and daemon start on a temporary instance; the test waits for the code location,
checks every asset with its group, every job, schedule (with its cron) and sensor, launches
`index_refresh` the way the UI's launchpad does, waits for it to succeed, and reads the run's
`chunk_index` metadata back: the counts `ragtune refresh` reports, and undoes a release with
the `champion_rollback` job, as a person would from the launchpad. Then headless Chromium opens
the asset graphs and the finished run's page, checks the asset names are on them, and saves
screenshots (into RAGTUNE_SCREENSHOTS_DIR when set: that is how docs/screenshots/ is made).
"""

import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import httpx
import pytest
from conftest import browser, free_port, register_versions

from pipelines.runner import get_instance, prepare_dagster_home
from ragtune import registry
from ragtune.behaviour.interactions import InteractionLog
from ragtune.settings import REPO_ROOT, load_settings

pytestmark = pytest.mark.integration

ASSETS = {
    "raw_documents": "knowledge",
    "document_chunks": "knowledge",
    "chunk_index": "knowledge",
    "interaction_logs": "interactions",
    "curated_interactions": "interactions",
    "raft_dataset": "behaviour",
    "lora_adapter": "behaviour",
    "evaluation_set": "behaviour",
    "embedder_release": "behaviour",
    "adapter_evaluation": "release",
    "release": "release",
    "serving_report": "monitoring",
}
JOBS = {"index_refresh", "interaction_curation", "adapter_retrain", "live_monitoring", "champion_rollback"}
SCHEDULES = {
    "nightly_index_refresh": "0 2 * * *",
    "quarterly_adapter_retrain": "0 3 1 1,4,7,10 *",
    "daily_serving_report": "30 0 * * *",
}
SENSORS = {"curated_volume_sensor", "step_outputs_pruner"}

WORKSPACE = """{ workspaceOrError { ... on Workspace { locationEntries { name
  locationOrLoadError { __typename ... on RepositoryLocation { repositories { name
    jobs { name } schedules { name cronSchedule } sensors { name } } } ... on PythonError { message } } } } } }"""
ASSET_NODES = "{ assetNodes { assetKey { path } groupName } }"
LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } ... on RunConfigValidationInvalid { errors { message } } } }"""
RUN = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"
MATERIALIZATION = """{ assetOrError(assetKey: {path: ["chunk_index"]}) { ... on Asset { assetMaterializations(limit: 10) {
  runId metadataEntries { label __typename ... on IntMetadataEntry { intValue } ... on FloatMetadataEntry { floatValue } } } } } }"""


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    response = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def wait_for_location(url: str, process: subprocess.Popen, log: Path, timeout: float = 240) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            entries = graphql(url, WORKSPACE)["workspaceOrError"]["locationEntries"]
            loaded = [e for e in entries if (e["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation"]
            if loaded:
                return loaded[0]
            errors = [
                e["locationOrLoadError"] for e in entries if (e["locationOrLoadError"] or {}).get("__typename") == "PythonError"
            ]
            assert not errors, errors
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(1)
    pytest.fail(f"the code location did not load:\n{log.read_text()[-3000:]}")


PAGES = {  # screenshot name -> (path under the location, names that must be on the page)
    "asset-graph-knowledge": ("asset-groups/knowledge", ["raw_documents", "document_chunks", "chunk_index"]),
    "asset-graph-release": ("asset-groups/release", ["adapter_evaluation", "release"]),
    "asset-graph-monitoring": ("asset-groups/monitoring", ["serving_report"]),
}


def open_page(driver, url: str, names: list[str], timeout: float = 180) -> None:
    """Load `url`, wait until every name is on the page, then (best effort) until nothing says Loading."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, timeout).until(lambda d: all(n in d.page_source for n in names))
    try:
        WebDriverWait(driver, 20).until(lambda d: "Loading" not in d.find_element(By.TAG_NAME, "body").text)
    except TimeoutException:
        pass  # a slow status badge makes a worse screenshot, not a failed check


def screenshots_of_the_ui(url: str, location: str, run_id: str, folder: Path) -> list[Path]:
    driver = browser(folder / "profile")
    try:
        driver.get(f"{url}/overview")
        driver.execute_script("window.localStorage.setItem('communityNux', '1')")  # the one-time newsletter dialog
        shots = []
        for name, (path, names) in PAGES.items():
            open_page(driver, f"{url}/locations/{location}/{path}", names)
            shots.append(folder / f"{name}.png")
            driver.save_screenshot(str(shots[-1]))
        open_page(driver, f"{url}/runs/{run_id}", ["index_refresh", "chunk_index", "Success"])
        shots.append(folder / "refresh-run.png")
        driver.save_screenshot(str(shots[-1]))
        return shots
    finally:
        driver.quit()


def launch_and_wait(url: str, params: dict, log: Path, timeout: float = 300) -> str:
    """Launch a run as the launchpad does and wait for it to end; its id, after asserting it succeeded."""
    launched = graphql(url, LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline, status = time.time() + timeout, None
    while time.time() < deadline:
        status = graphql(url, RUN, {"id": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(1)
    assert status == "SUCCESS", (status, log.read_text()[-3000:])
    return run_id


def test_ui_lists_everything_and_runs_a_refresh(home, corpus, tmp_path):
    settings = load_settings()
    dagster_home = prepare_dagster_home(settings)
    port = free_port()
    log = tmp_path / "dagster.log"
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "RAGTUNE_HOME": str(settings.home_dir)}
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("dagster")),
            "dev",
            "-w",
            str(REPO_ROOT / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        location = wait_for_location(url, process, log)
        (repository,) = location["locationOrLoadError"]["repositories"]
        assert JOBS <= {j["name"] for j in repository["jobs"]}
        assert {s["name"]: s["cronSchedule"] for s in repository["schedules"]} == SCHEDULES
        assert {s["name"] for s in repository["sensors"]} == SENSORS
        nodes = graphql(url, ASSET_NODES)["assetNodes"]
        assert {"/".join(n["assetKey"]["path"]): n["groupName"] for n in nodes} == ASSETS

        params = {
            "selector": {
                "repositoryLocationName": location["name"],
                "repositoryName": repository["name"],
                "jobName": "index_refresh",
            },
            "runConfigData": {"ops": {"raw_documents": {"config": {"source_dir": str(corpus)}}}},
        }
        run_id = launch_and_wait(url, params, log)

        # this run's materialization (a scheduled refresh could have landed beside it, if a tick fell in the test)
        materialization = next(
            m for m in graphql(url, MATERIALIZATION)["assetOrError"]["assetMaterializations"] if m["runId"] == run_id
        )
        values = {e["label"]: e.get("intValue", e.get("floatValue")) for e in materialization["metadataEntries"]}
        documents = len(list(corpus.glob("*.md")))
        assert values["docs_added"] == documents and values["docs_deleted"] == 0
        assert values["chunks_embedded"] == values["chunks_total"] > 0

        # undo a release from the launchpad: champion_rollback with a reason, tagged with the run id
        v1, v2 = register_versions(settings, ["a", "b"], tmp_path / "adapter")
        registry.promote(settings.tracking_uri, settings.registered_model, v1, reason="first")
        registry.promote(settings.tracking_uri, settings.registered_model, v2, reason="second")
        params["selector"]["jobName"] = "champion_rollback"
        params["runConfigData"] = {"ops": {"rollback_champion": {"config": {"reason": "worse answers in review"}}}}
        rollback_run = launch_and_wait(url, params, log)
        assert registry.aliases(settings.tracking_uri, settings.registered_model) == {"champion": v1}
        tags = {v["version"]: v["tags"] for v in registry.list_versions(settings.tracking_uri, settings.registered_model)}
        assert tags[v2]["rolled_back_reason"] == "worse answers in review" and tags[v1]["restored_run_id"] == rollback_run

        # yesterday's serving report from the launchpad (today is not a partition until it ends): its figures,
        # its partition and its check
        yesterday = datetime.now(UTC) - timedelta(days=1)
        day = yesterday.strftime("%Y-%m-%d")
        InteractionLog(settings.interactions_db).extend(
            [
                {
                    "question": f"How do I load model {n}?",
                    "answer": f"Use org/model-{n}.",
                    "citations": [{"doc_id": "d1"}],
                    "retrieved": [{"doc_id": "d1", "similarity": 0.7}],
                    "model_version": "base",  # yesterday no adapter was released yet: the base model served
                    "latency_ms": 900.0 + n,
                    "feedback": "up" if n % 2 else None,
                    "ts": (yesterday.replace(hour=12, minute=0) + timedelta(minutes=n)).isoformat(),
                }
                for n in range(6)
            ]
        )
        params["selector"]["jobName"] = "live_monitoring"
        params["runConfigData"] = {}
        params["executionMetadata"] = {"tags": [{"key": "dagster/partition", "value": day}]}
        launch_and_wait(url, params, log)
        instance = get_instance(settings)
        assert day in instance.get_materialized_partitions(dg.AssetKey("serving_report"))
        report = instance.get_latest_materialization_event(dg.AssetKey("serving_report")).asset_materialization
        figures = {k: v.value for k, v in report.metadata.items()}
        assert figures["champion"] == "base" and figures["champion_answers"] == 6 and figures["champion_up_rate"] == 0.5
        (check,) = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("serving_report"), "champion_has_not_regressed")]
        ).values()
        assert check.status.value == "SUCCEEDED"

        shots = screenshots_of_the_ui(url, location["name"], run_id, tmp_path)
        assert all(p.stat().st_size > 10_000 for p in shots)  # a real rendering, not a blank page
        if os.environ.get("RAGTUNE_SCREENSHOTS_DIR"):
            for shot in shots:
                shutil.copy(shot, Path(os.environ["RAGTUNE_SCREENSHOTS_DIR"]) / shot.name)
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
