"""Alias moves in the real MLflow registry: promote, roll back, with every move recorded as tags."""

import json

import pytest
from conftest import free_port, register_versions

from ragtune.cli import main as cli
from ragtune.registry import CHAMPION, PREVIOUS_CHAMPION, aliases, list_versions
from ragtune.settings import load_settings


def models(capsys, *argv) -> tuple[int, dict]:
    capsys.readouterr()
    code = cli(["models", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_promote_and_rollback_move_aliases_and_record_why(home, tmp_path, capsys):
    s = load_settings()
    v1, v2, v3 = register_versions(s, ["a", "b", "c"], tmp_path / "adapter")

    code, out = models(capsys, "rollback", "--reason", "nothing yet")
    assert code == 1 and "nothing to roll back to" in out["error"]
    assert models(capsys, "promote", v1, "--reason", "first release")[0] == 0
    code, out = models(capsys, "promote", v2, "--reason", "beats v1")
    assert code == 0 and (out["champion"], out["previous_champion"]) == (v2, v1)
    assert aliases(s.tracking_uri, s.registered_model) == {CHAMPION: v2, PREVIOUS_CHAMPION: v1}

    code, out = models(capsys, "rollback", "--reason", "complaints about v2")
    assert code == 0 and (out["champion"], out["rolled_back_from"]) == (v1, v2)
    assert aliases(s.tracking_uri, s.registered_model) == {CHAMPION: v1}
    tags = {v["version"]: v["tags"] for v in list_versions(s.tracking_uri, s.registered_model)}
    assert tags[v2]["rolled_back_reason"] == "complaints about v2" and tags[v2]["promoted_reason"] == "beats v1"
    assert tags[v1]["restored_reason"] == "complaints about v2" and "rolled_back_at" in tags[v2]

    assert models(capsys, "rollback", "--to", v3, "--reason", "try v3")[0] == 0
    assert aliases(s.tracking_uri, s.registered_model)[CHAMPION] == v3
    code, out = models(capsys, "promote", "99", "--reason", "typo")
    assert code == 1 and "no version 99" in out["error"]
    code, out = models(capsys, "promote", v3, "--reason", "again")
    assert code == 1 and "already the champion" in out["error"]
    listed = models(capsys, "list")[1]
    assert [v["aliases"] for v in listed["versions"]] == [[CHAMPION], [], []]


def test_versions_trained_on_erased_data_need_force(home, tmp_path, capsys):
    from ragtune.registry import mark_needs_retrain

    s = load_settings()
    (v1,) = register_versions(s, ["erased"], tmp_path / "adapter")
    assert mark_needs_retrain(s.tracking_uri, s.registered_model, {"erased"}, "test") == [v1]
    code, out = models(capsys, "promote", v1, "--reason", "ship it")
    assert code == 1 and "needs_retrain" in out["error"]
    assert models(capsys, "promote", v1, "--reason", "accepted risk", "--force")[0] == 0


def unreachable_registry(monkeypatch) -> str:
    """An MLflow tracking server URI nothing listens on, asked once (no retries): the registry is down."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    return f"http://127.0.0.1:{free_port()}"


def test_a_registry_that_cannot_be_asked_is_not_an_empty_one(home, monkeypatch):
    from evaluation.gate import GatePolicy
    from evaluation.release import release_challenger
    from ragtune.registry import RegistryUnavailable, resolve

    s = load_settings()
    assert aliases(s.tracking_uri, "never-registered") == {} and list_versions(s.tracking_uri, "never-registered") == []
    down = unreachable_registry(monkeypatch)
    for ask in (
        lambda: aliases(down, s.registered_model),
        lambda: list_versions(down, s.registered_model),
        lambda: resolve(down, s.registered_model, CHAMPION),
        lambda: release_challenger(down, s.registered_model, GatePolicy()),  # fails its step, moves nothing
    ):
        with pytest.raises(RegistryUnavailable, match=f"could not .* MLflow registry at {down}"):
            ask()


def test_forget_erases_while_the_registry_is_down_and_a_rerun_flags(home, tmp_path, monkeypatch, capsys):
    from ragtune.behaviour.datasets import save_raft

    s = load_settings()
    (v1,) = register_versions(s, ["h1"], tmp_path / "adapter")
    save_raft(s.datasets_dir, "h1", {"train": [{"id": "a1", "user": "alice"}, {"id": "b1", "user": "bob"}]}, {})
    monkeypatch.setenv("RAGTUNE_MLFLOW_TRACKING_URI", unreachable_registry(monkeypatch))
    capsys.readouterr()
    assert cli(["forget", "--user", "alice", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert not out["ok"] and out["dataset_rows_removed"] == 1 and out["versions_flagged"] == []
    assert out["unflagged"][s.registered_model]["datasets"] == ["h1"]  # owed, and said so
    assert "alice" not in (s.datasets_dir / "raft-h1" / "train.jsonl").read_text()  # the data is gone regardless

    monkeypatch.delenv("RAGTUNE_MLFLOW_TRACKING_URI")
    assert cli(["forget", "--user", "alice", "--json"]) == 0  # the rerun pays what was owed
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["versions_flagged"] == [v1] and out["unflagged"] == {}
    assert list_versions(s.tracking_uri, s.registered_model)[0]["tags"]["needs_retrain"] == "true"
