"""The code location loads with every asset, check, job and schedule."""

import dagster as dg

from pipelines.definitions import build_definitions, defs
from ragtune.settings import load_settings

GROUPS = {
    "knowledge": {"raw_documents", "document_chunks", "chunk_index"},
    "interactions": {"interaction_logs", "curated_interactions"},
    "behaviour": {"evaluation_set", "embedder_release", "raft_dataset", "lora_adapter"},
    "release": {"adapter_evaluation", "release"},
    "monitoring": {"serving_report"},
}
CHECKS = {
    "chunks_are_valid",
    "index_vectors_are_valid",
    "curated_schema_is_valid",
    "curated_has_no_pii",
    "curated_is_not_empty",
    "raft_dataset_is_valid",
    "raft_dataset_has_no_pii",
    "release_gate",
    "champion_has_not_regressed",
}
BLOCKING = {
    "chunks_are_valid",
    "curated_has_no_pii",
    "curated_is_not_empty",
    "raft_dataset_is_valid",
    "raft_dataset_has_no_pii",
    "release_gate",
}


def test_definitions_load_everything(home):
    d = build_definitions(load_settings())
    graph = d.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == set().union(*GROUPS.values())
    for group, assets in GROUPS.items():
        assert all(graph.get(dg.AssetKey(k)).group_name == group for k in assets), group
    assert {c.name for c in graph.asset_check_keys} == CHECKS
    blocking = {spec.name for a in d.assets if isinstance(a, dg.AssetsDefinition) for spec in a.check_specs if spec.blocking}
    blocking |= {spec.name for c in d.asset_checks for spec in c.check_specs if spec.blocking}
    assert blocking == BLOCKING
    job = d.resolve_job_def("index_refresh")
    assert {n.name for n in job.nodes} >= {"raw_documents", "document_chunks", "chunk_index"}
    retrain = d.resolve_job_def("adapter_retrain")
    assert {n.name for n in retrain.nodes} >= GROUPS["interactions"] | GROUPS["behaviour"] | GROUPS["release"]
    assert "chunk_index" not in {n.name for n in retrain.nodes}  # reads the live index, does not rebuild it
    assert {n.name for n in d.resolve_job_def("interaction_curation").nodes} >= GROUPS["interactions"]
    assert dg.AssetKey("chunk_index") in graph.get(dg.AssetKey("raft_dataset")).parent_keys
    # the held-out evaluation items are never trained on: the RAFT builder reads which ones they are
    assert dg.AssetKey("evaluation_set") in graph.get(dg.AssetKey("raft_dataset")).parent_keys
    assert dg.AssetKey("evaluation_set") in graph.get(dg.AssetKey("adapter_evaluation")).parent_keys
    # RAFT mines its hard negatives with the retriever that will serve: the embedder is released first
    assert dg.AssetKey("embedder_release") in graph.get(dg.AssetKey("raft_dataset")).parent_keys
    schedule = d.resolve_schedule_def("nightly_index_refresh")
    assert schedule.cron_schedule == "0 2 * * *" and schedule.job_name == "index_refresh"
    assert graph.get(dg.AssetKey("chunk_index")).pools == {"lancedb_writer"}
    assert dg.AssetKey("adapter_evaluation") in graph.get(dg.AssetKey("release")).parent_keys
    quarterly = d.resolve_schedule_def("quarterly_adapter_retrain")
    assert quarterly.cron_schedule == "0 3 1 1,4,7,10 *" and quarterly.job_name == "adapter_retrain"
    daily = d.resolve_schedule_def("daily_serving_report")
    assert daily.cron_schedule == "30 0 * * *" and daily.job_name == "live_monitoring"
    assert graph.get(dg.AssetKey("serving_report")).partitions_def.get_partition_keys()[0] == "2025-01-01"
    sensor = d.resolve_sensor_def("curated_volume_sensor")
    assert sensor.job_name == "adapter_retrain" and sensor.default_status == dg.DefaultSensorStatus.STOPPED


def test_schedule_timezone_comes_from_settings(home, monkeypatch):
    monkeypatch.setenv("RAGTUNE_TIMEZONE", "Europe/Berlin")
    assert build_definitions(load_settings()).resolve_schedule_def("nightly_index_refresh").execution_timezone == "Europe/Berlin"


def test_lazy_entry_point_is_what_workspace_yaml_loads(home):
    loaded = defs()
    assert isinstance(loaded, dg.Definitions)
    loaded.validate_loadable(loaded)


def test_run_configs_are_keyed_by_definitions_and_validate_against_the_jobs():
    from assets.behaviour import raft_dataset
    from assets.release import release_gate
    from pipelines.definitions import build_definitions
    from pipelines.jobs import ADAPTER_RETRAIN, INDEX_REFRESH
    from pipelines.run_config import node_name, ops_config
    from ragtune.cli.release import retrain_run_config
    from ragtune.settings import load_settings

    assert node_name(release_gate) == "adapter_evaluation_release_gate" and node_name("x") == "x"
    assert ops_config({raft_dataset: {"order": "retrieval"}, release_gate: {}}) == {
        "ops": {"raft_dataset": {"config": {"order": "retrieval"}}}
    }
    definitions = build_definitions(load_settings())
    config = retrain_run_config(max_steps=2, gate="evaluation/gate-demo.yaml", raft_order="retrieval", holdout=0.4)
    assert set(config["ops"]) == {"raft_dataset", "lora_adapter", "evaluation_set", "adapter_evaluation_release_gate", "release"}
    # every op the config names exists in the job, with every field it sets (Dagster validates without running)
    for job_name, run_config in (
        (ADAPTER_RETRAIN, config),
        (INDEX_REFRESH, ops_config({"chunk_index": {"allow_empty_source": True}})),
    ):
        assert dg.validate_run_config(definitions.resolve_job_def(job_name), run_config)["ops"]
