"""The code location loads with every asset, check, job and schedule."""

import dagster as dg

from pipelines.definitions import build_definitions, defs
from ragtune.settings import load_settings


def test_definitions_load_everything(home):
    d = build_definitions(load_settings())
    graph = d.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {"raw_documents", "document_chunks", "chunk_index"}
    assert all(graph.get(dg.AssetKey(k)).group_name == "knowledge" for k in keys)
    checks = {c.name for c in graph.asset_check_keys}
    assert checks == {"chunks_are_valid", "index_vectors_are_valid"}
    job = d.resolve_job_def("index_refresh")
    assert {n.name for n in job.nodes} >= {"raw_documents", "document_chunks", "chunk_index"}
    schedule = d.resolve_schedule_def("nightly_index_refresh")
    assert schedule.cron_schedule == "0 2 * * *" and schedule.job_name == "index_refresh"
    assert graph.get(dg.AssetKey("chunk_index")).pools == {"lancedb_writer"}


def test_schedule_timezone_comes_from_settings(home, monkeypatch):
    monkeypatch.setenv("RAGTUNE_TIMEZONE", "Europe/Berlin")
    assert build_definitions(load_settings()).resolve_schedule_def("nightly_index_refresh").execution_timezone == "Europe/Berlin"


def test_lazy_entry_point_is_what_workspace_yaml_loads(home):
    loaded = defs()
    assert isinstance(loaded, dg.Definitions)
    loaded.validate_loadable(loaded)
