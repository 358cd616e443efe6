"""Alias moves in the real MLflow registry: promote, roll back, with every move recorded as tags."""

import json

from conftest import register_versions

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
