"""The behaviour half through Dagster and the CLI: curate, build RAFT data, train through Pipes, register; the registry over REST."""

import json

import pytest
import yaml
from conftest import doc_records, free_port, run_cli, tiny_training_config, wait_for_http

from ragtune.settings import load_settings

pytestmark = pytest.mark.integration


def write_log(path, records, extra_lines=()):
    path.write_text("\n".join([json.dumps(r) for r in records] + list(extra_lines)) + "\n")
    return path


def test_cli_imports_curates_shows_and_forgets(home, tmp_path, corpus, capsys):
    records = doc_records(corpus)[:6]
    for k, r in enumerate(records):
        r["user"] = f"user{k % 3}"
    records[0]["question"] = "I am jane.doe@example.com and my SSN is 536-22-8476: " + records[0]["question"]
    records[1]["feedback"] = "down"
    records[2].update(feedback="down", correction="A corrected answer that names the right model id.")
    records[3]["question"] = "My SSN is the sample 123-45-6789. " + records[3]["question"]  # redacted all the same
    records[4]["question"] = "Send it to jane@corp..com please. " + records[4]["question"]  # residue: quarantined
    log = write_log(tmp_path / "log.jsonl", records, ["{broken", json.dumps({"question": "only a question"})])

    imported = run_cli(capsys, "logs", "import", str(log))
    assert (imported["exit"], imported["added"], len(imported["bad_lines"])) == (0, 6, 2)
    curated = run_cli(capsys, "curate")
    assert curated["exit"] == 0 and curated["kept"] == 4
    assert curated["dropped"] == {"no_positive_feedback": 1, "pii_residue": 1}
    assert curated["redactions"] == {"EMAIL_ADDRESS": 1, "US_SSN": 2}
    assert [(q["id"], q["kinds"]) for q in curated["quarantined"]] == [(records[4]["id"], ["EMAIL_ADDRESS"])]
    shown = run_cli(capsys, "logs", "show", "--curated", "--limit", "10")
    assert shown["total"] == 4 and any("<EMAIL_ADDRESS>" in r["question"] for r in shown["records"])
    assert any(r["answer"].startswith("A corrected answer") and r["source"] == "correction" for r in shown["records"])
    raw = run_cli(capsys, "logs", "show", "--limit", "2")
    assert raw["total"] == 6 and len(raw["records"]) == 2

    forgotten = run_cli(capsys, "forget", "--user", "user0")
    assert forgotten["interactions_removed"] == 2 and forgotten["curated_removed"] == 2
    assert run_cli(capsys, "logs", "show", "--curated")["total"] == 2


# the release stage (evaluation, gate, alias moves) is exercised in test_release_loop.py
UP_TO_TRAINING = ["interaction_logs", "curated_interactions", "evaluation_set", "raft_dataset", "lora_adapter"]


def test_empty_log_blocks_training(home, capsys):
    from pipelines.runner import run_job

    outcome = run_job(load_settings(), "adapter_retrain", output_nodes=("lora_adapter",))
    assert not outcome.success and "curated_is_not_empty" in outcome.error
    assert outcome.outputs["lora_adapter"] is None and "lora_adapter" not in outcome.metadata
    assert run_cli(capsys, "models", "list")["versions"] == []


def test_retrain_job_trains_through_pipes_and_registers(home, corpus, base_model, tmp_path, monkeypatch, capsys):
    from mlflow import MlflowClient

    from pipelines.runner import get_instance, run_job
    from ragtune.behaviour.interactions import InteractionLog
    from ragtune.knowledge.store import ChunkStore

    monkeypatch.setenv("RAGTUNE_BASE_MODEL", base_model)
    s = load_settings()
    assert run_job(s, "index_refresh", {"ops": {"raw_documents": {"config": {"source_dir": str(corpus)}}}}).success
    InteractionLog(s.interactions_db).extend(doc_records(corpus)[:12])
    training = tiny_training_config(tmp_path / "tiny.yaml")
    run_config = {
        "ops": {
            "raft_dataset": {"config": {"distractors": 1, "validation_fraction": 0.25}},
            "lora_adapter": {"config": {"training_config": str(training)}},
        }
    }
    # 12 interactions hold out too few to judge a challenger on: the job stops before training and says why
    refused = run_job(s, "adapter_retrain", run_config, output_nodes=("lora_adapter",), assets=UP_TO_TRAINING)
    assert not refused.success and "usable answerable evaluation items" in refused.error, refused.error
    assert "--eval-set" in refused.error and "needs at least 100" in refused.error  # the gate's own minimum
    assert "lora_adapter" not in refused.metadata

    run_config["ops"]["evaluation_set"] = {"config": {"min_items": 1, "holdout": 0.25}}
    outcome = run_job(
        s, "adapter_retrain", run_config, output_nodes=("evaluation_set", "raft_dataset", "lora_adapter"), assets=UP_TO_TRAINING
    )
    assert outcome.success, outcome.error

    raft, adapter, held = (outcome.outputs[k] for k in ("raft_dataset", "lora_adapter", "evaluation_set"))
    assert held["source"] == "held-out" and held["items"] and len(held["held_out_ids"]) == len(held["items"])
    assert raft["train"] + raft["validation"] == 12 - len(held["held_out_ids"])  # evaluation items are never trained on
    assert raft["index_version"] == ChunkStore(s.lancedb_uri).version()
    assert adapter["model_version"] == "1" and outcome.metadata["lora_adapter"]["mlflow_run_id"] == adapter["run_id"]
    assert outcome.metadata["curated_interactions"]["kept"] == 12

    client = MlflowClient(tracking_uri=s.tracking_uri, registry_uri=s.tracking_uri)
    tags = client.get_model_version(s.registered_model, "1").tags
    assert tags["dataset_hash"] == raft["digest"] and tags["index_version"] == str(raft["index_version"])
    assert (
        tags["curated_records"] == str(12 - len(held["held_out_ids"]))
        and tags["dagster_run_id"] == outcome.run_id
        and tags["code_version"]
    )
    assert tags["base_model"] == base_model
    assert len(client.get_metric_history(adapter["run_id"], "loss")) == 1

    checks = get_instance(s).get_latest_asset_check_evaluation_record  # the blocking checks ran and passed
    import dagster as dg

    for asset, check in [
        ("curated_interactions", "curated_has_no_pii"),
        ("curated_interactions", "curated_is_not_empty"),
        ("raft_dataset", "raft_dataset_is_valid"),
        ("raft_dataset", "raft_dataset_has_no_pii"),
    ]:
        record = checks(dg.AssetCheckKey(dg.AssetKey(asset), check))
        assert record is not None and record.evaluation.passed, check

    listed = run_cli(capsys, "models", "list")
    assert [v["version"] for v in listed["versions"]] == ["1"] and listed["versions"][0]["tags"]["dataset_hash"] == raft["digest"]

    # the registry as a client sees it: `make mlflow-ui`'s server, over MLflow's REST API
    assert run_cli(capsys, "models", "promote", "1", "--reason", "first release")["exit"] == 0
    check_registry_over_rest(s, tmp_path, run_id=adapter["run_id"], digest=raft["digest"], base_model=base_model)

    # a crash inside the training process fails the step with its reason; the run's process and the registry are unharmed
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"target_modules": ["no_such_module"], "max_steps": 1}))
    run_config["ops"]["lora_adapter"]["config"]["training_config"] = str(bad)
    crashed = run_job(s, "adapter_retrain", run_config, output_nodes=("lora_adapter",), assets=UP_TO_TRAINING)
    assert not crashed.success and "lora_adapter" in crashed.error, crashed.error
    assert [v["version"] for v in run_cli(capsys, "models", "list")["versions"]] == ["1"]


def check_registry_over_rest(s, tmp_path, run_id: str, digest: str, base_model: str) -> None:
    """`ragtune mlflow-ui` (what `make mlflow-ui` runs) on this data home: the model, version, alias and tags over REST."""
    import os
    import subprocess
    import sys

    import httpx

    api = "api/2.0/mlflow"
    port = free_port()
    log = (tmp_path / "mlflow.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "ragtune.cli", "mlflow-ui", "--port", str(port)],
        env={**os.environ, "RAGTUNE_HOME": str(s.home_dir)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_for_http(f"{url}/health", server)
        except (RuntimeError, TimeoutError) as e:
            raise AssertionError((tmp_path / "mlflow.log").read_text()[-3000:]) from e
        model = httpx.get(f"{url}/{api}/registered-models/get", params={"name": s.registered_model}).json()["registered_model"]
        assert model["name"] == s.registered_model
        assert {a["alias"]: a["version"] for a in model.get("aliases", [])} == {"champion": "1"}
        found = httpx.get(f"{url}/{api}/model-versions/search", params={"filter": f"name='{s.registered_model}'"}).json()
        (version,) = found["model_versions"]
        tags = {t["key"]: t["value"] for t in version.get("tags", [])}
        assert version["version"] == "1" and version["run_id"] == run_id
        assert tags["dataset_hash"] == digest and tags["base_model"] == base_model and tags["promoted_reason"] == "first release"
        champion = httpx.get(f"{url}/{api}/registered-models/alias", params={"name": s.registered_model, "alias": "champion"})
        assert champion.json()["model_version"]["version"] == "1"
        run = httpx.get(f"{url}/{api}/runs/get", params={"run_id": run_id}).json()["run"]
        assert run["info"]["status"] == "FINISHED" and any(m["key"] == "train_loss" for m in run["data"]["metrics"])
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
