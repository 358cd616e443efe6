"""The MLflow registry for adapters: one registered model, versions, tags and aliases.

Consumers load `models:/NAME@champion`. The aliases live here and nowhere else.
Versions are never deleted; every move is recorded as tags.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous_champion"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS_CHAMPION)
EXPERIMENT = "ragtune-adapter"
MOVE_PREFIX = "alias_move."  # registered-model tags, one per alias move: the champion history
NEEDS_RETRAIN = "needs_retrain"  # tag set when a version was trained on data that has since been erased


def failpoint(name: str) -> None:
    """Crash here when RAGTUNE_FAILPOINT names this point: how the tests prove a half-done step is safe.
    With RAGTUNE_FAILPOINT_KILL=1 the process kills itself (SIGKILL) instead of raising."""
    import os
    import signal

    if os.environ.get("RAGTUNE_FAILPOINT") == name:
        if os.environ.get("RAGTUNE_FAILPOINT_KILL") == "1":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"failpoint {name} (RAGTUNE_FAILPOINT)")


def code_version() -> str:
    """The git commit of the code that trained a version (plus "+dirty"), or the package version."""
    import subprocess

    from ragtune.settings import REPO_ROOT

    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        from importlib.metadata import version

        return f"ragtune {version('ragtune')}"


def client(tracking_uri: str):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def ensure_experiment(tracking_uri: str, name: str, artifact_location: Path | None) -> str:
    """The experiment's id, creating it with artifacts in the data home (not ./mlruns of the cwd)."""
    c = client(tracking_uri)
    found = c.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = artifact_location.resolve().as_uri() if artifact_location else None
    try:
        return c.create_experiment(name, artifact_location=location)
    except Exception:  # another process created it first; its id is what we want
        found = c.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def register_model(
    tracking_uri: str,
    name: str,
    run_id: str,
    artifact_path: str,
    tags: dict[str, str],
    description: str = "LoRA adapters trained by ragtune (RAFT on curated interactions).",
) -> str:
    """A new version of `name` whose source is the model folder (an adapter, an embedder) logged by `run_id`."""
    from mlflow.exceptions import MlflowException

    c = client(tracking_uri)
    try:
        c.create_registered_model(name, description=description)
    except MlflowException as e:
        if "already exists" not in str(e).lower() and "RESOURCE_ALREADY_EXISTS" not in str(e):
            raise
    source = f"{c.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact_path}"
    version = c.create_model_version(name, source=source, run_id=run_id, tags={k: str(v) for k, v in tags.items()})
    return str(version.version)


class RegistryError(RuntimeError):
    """A request the registry answered with no: an unknown version, a move that makes no sense."""


class RegistryUnavailable(RuntimeError):
    """The registry could not be asked (server down, store unreadable): no answer, which is not "nothing registered"."""


def asking(tracking_uri: str, what: str, call):
    """`call()`, with any failure other than MLflow's RESOURCE_DOES_NOT_EXIST raised as RegistryUnavailable."""
    from mlflow.exceptions import MlflowException

    try:
        return call()
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise
        raise RegistryUnavailable(f"could not {what} from the MLflow registry at {tracking_uri}: {exc}") from exc
    except Exception as exc:
        raise RegistryUnavailable(f"could not {what} from the MLflow registry at {tracking_uri}: {exc}") from exc


def registered_model(tracking_uri: str, name: str):
    """The registered model, or None when it does not exist; RegistryUnavailable when the registry cannot say."""
    from mlflow.exceptions import MlflowException

    c = client(tracking_uri)
    try:
        return asking(tracking_uri, f"read {name}", lambda: c.get_registered_model(name))
    except MlflowException:  # only RESOURCE_DOES_NOT_EXIST gets here
        return None


def list_versions(tracking_uri: str, name: str) -> list[dict]:
    """Every version, newest first, with its aliases and tags; [] when nothing is registered yet."""
    model = registered_model(tracking_uri, name)
    if model is None:
        return []
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    c = client(tracking_uri)
    versions = asking(tracking_uri, f"list the versions of {name}", lambda: c.search_model_versions(f"name = '{name}'"))
    rows = [
        {
            "version": str(v.version),
            "run_id": v.run_id,
            "created": datetime.fromtimestamp(v.creation_timestamp / 1000, UTC).isoformat(timespec="seconds"),
            "aliases": sorted(aliases.get(str(v.version), [])),
            "source": v.source,
            "tags": dict(v.tags or {}),
        }
        for v in versions
    ]
    return sorted(rows, key=lambda r: int(r["version"]), reverse=True)


def mark_needs_retrain(tracking_uri: str, name: str, dataset_hashes: set[str], reason: str) -> list[str]:
    """Tag every version trained on one of `dataset_hashes`; returns the versions tagged."""
    c = client(tracking_uri)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    tagged = []
    for row in list_versions(tracking_uri, name):
        if row["tags"].get("dataset_hash") in dataset_hashes:
            c.set_model_version_tag(name, row["version"], NEEDS_RETRAIN, "true")
            c.set_model_version_tag(name, row["version"], "needs_retrain_reason", f"{now} {reason}")
            tagged.append(row["version"])
    return tagged


def aliases(tracking_uri: str, name: str) -> dict[str, str]:
    """alias -> version of the registered model; {} when it does not exist yet."""
    model = registered_model(tracking_uri, name)
    return {alias: str(version) for alias, version in (model.aliases or {}).items()} if model else {}


def record_move(c, name: str, version: str, event: str, reason: str, run_id: str | None) -> None:
    """Tags on the version: when, why and by which run it last took part in a move of this kind."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    c.set_model_version_tag(name, version, f"{event}_at", now)
    c.set_model_version_tag(name, version, f"{event}_reason", reason)
    if run_id:
        c.set_model_version_tag(name, version, f"{event}_run_id", run_id)


def move_alias(c, name: str, alias: str, to: str | None, was: str | None, reason: str, run_id: str | None) -> None:
    """Point `alias` at `to` (None: remove it) and append the move to the model's alias log.

    The log is one registered-model tag per move (MOVE_PREFIX + a sortable UTC time): append-only,
    kept by whatever store the registry uses, and what `ragtune models history` reads.
    """
    if to is None:
        c.delete_registered_model_alias(name, alias)
    else:
        c.set_registered_model_alias(name, alias, str(to))
    now = datetime.now(UTC)
    entry = {"at": now.isoformat(timespec="microseconds"), "alias": alias, "from": was, "to": to, "reason": reason[:2000]}
    c.set_registered_model_tag(name, f"{MOVE_PREFIX}{now:%Y%m%dT%H%M%S.%f}Z.{alias}", json.dumps({**entry, "run_id": run_id}))


def alias_history(tracking_uri: str, name: str) -> list[dict]:
    """Every logged alias move of `name`, oldest first: at, alias, from, to, reason, run_id."""
    model = registered_model(tracking_uri, name)
    tags = dict(model.tags or {}) if model else {}
    return [json.loads(tags[key]) for key in sorted(k for k in tags if k.startswith(MOVE_PREFIX))]


def champion_at(history: list[dict], when: datetime) -> str | None:
    """The champion version at `when` (None: the base model served), replaying the log's champion moves."""
    champion = None
    for move in history:
        if move["alias"] == CHAMPION and datetime.fromisoformat(move["at"]) <= when:
            champion = move["to"]
    return champion


def promote(tracking_uri: str, name: str, version: str, reason: str, run_id: str | None = None, force: bool = False) -> dict:
    """`version` becomes champion; the old champion becomes previous_champion.

    previous_champion moves first: a crash between the two calls leaves the old champion serving.
    """
    c = client(tracking_uri)
    current = aliases(tracking_uri, name)
    rows = {row["version"]: row for row in list_versions(tracking_uri, name)}
    if str(version) not in rows:
        raise RegistryError(f"{name} has no version {version}; known: {', '.join(sorted(rows, key=int)) or 'none'}")
    if rows[str(version)]["tags"].get(NEEDS_RETRAIN) == "true" and not force:
        raise RegistryError(f"version {version} was trained on erased data (needs_retrain); retrain, or pass --force")
    old = current.get(CHAMPION)
    if old == str(version):
        raise RegistryError(f"version {version} is already the champion")
    if old:
        move_alias(c, name, PREVIOUS_CHAMPION, old, current.get(PREVIOUS_CHAMPION), reason, run_id)
        record_move(c, name, old, "demoted", reason, run_id)
    failpoint("promote:between_aliases")
    move_alias(c, name, CHAMPION, str(version), old, reason, run_id)
    if current.get(CHALLENGER) == str(version):
        move_alias(c, name, CHALLENGER, None, str(version), reason, run_id)
    record_move(c, name, str(version), "promoted", reason, run_id)
    return {"champion": str(version), "previous_champion": old, "reason": reason}


def rollback(
    tracking_uri: str, name: str, reason: str, to: str | None = None, force: bool = False, run_id: str | None = None
) -> dict:
    """champion goes back to previous_champion (or `to`); the version rolled back from is tagged and not kept as a fallback."""
    c = client(tracking_uri)
    current = aliases(tracking_uri, name)
    bad = current.get(CHAMPION)
    target = str(to) if to else current.get(PREVIOUS_CHAMPION)
    if not target:
        raise RegistryError("nothing to roll back to: no previous_champion alias; name a version with --to")
    if bad == target:
        raise RegistryError(f"version {target} is already the champion")
    rows = {row["version"]: row for row in list_versions(tracking_uri, name)}
    if target not in rows:
        raise RegistryError(f"{name} has no version {target}")
    if rows[target]["tags"].get(NEEDS_RETRAIN) == "true" and not force:
        raise RegistryError(f"version {target} was trained on erased data (needs_retrain); retrain, or pass --force")
    move_alias(c, name, CHAMPION, target, bad, reason, run_id)
    if current.get(PREVIOUS_CHAMPION) in (target, bad):
        move_alias(c, name, PREVIOUS_CHAMPION, None, current.get(PREVIOUS_CHAMPION), reason, run_id)
    if bad:
        record_move(c, name, bad, "rolled_back", reason, run_id)
    record_move(c, name, target, "restored", reason, run_id)
    return {"champion": target, "rolled_back_from": bad, "reason": reason}


def retire_champion(tracking_uri: str, name: str, reason: str, run_id: str | None = None) -> str | None:
    """No version is champion any more (what serves is the base model again); the one that was is tagged."""
    c = client(tracking_uri)
    bad = aliases(tracking_uri, name).get(CHAMPION)
    if bad:
        move_alias(c, name, CHAMPION, None, bad, reason, run_id)
        record_move(c, name, bad, "rolled_back", reason, run_id)
    return bad


def set_challenger(tracking_uri: str, name: str, version: str, run_id: str | None = None) -> None:
    """`version` is the candidate under evaluation (the alias the gate and release read)."""
    c = client(tracking_uri)
    reason = "evaluated against the champion"
    move_alias(c, name, CHALLENGER, str(version), aliases(tracking_uri, name).get(CHALLENGER), reason, run_id)
    record_move(c, name, str(version), "challenger", reason, run_id)


def clear_challenger(tracking_uri: str, name: str, version: str, reason: str, run_id: str | None = None) -> None:
    move_alias(client(tracking_uri), name, CHALLENGER, None, str(version), reason, run_id)


def version_tags(tracking_uri: str, name: str, version: str) -> dict[str, str]:
    c = client(tracking_uri)
    found = asking(tracking_uri, f"read version {version} of {name}", lambda: c.get_model_version(name, str(version)))
    return dict(found.tags or {})


def tag_version(tracking_uri: str, name: str, version: str, tags: dict[str, object]) -> None:
    c = client(tracking_uri)
    for key, value in tags.items():
        c.set_model_version_tag(name, str(version), key, str(value))


def reject(tracking_uri: str, name: str, version: str, reasons: list[str], run_id: str | None = None) -> None:
    """The gate said no: tag the version with why; the champion stays where it is."""
    c = client(tracking_uri)
    c.set_model_version_tag(name, str(version), "gate_verdict", "rejected")
    record_move(c, name, str(version), "rejected", "; ".join(reasons)[:4000], run_id)


def resolve(tracking_uri: str, name: str, ref: str) -> str | None:
    """A version number for `ref`: an alias (champion, ...) or a version number; None for an unset alias."""
    if str(ref).isdigit():
        return str(ref)
    return aliases(tracking_uri, name).get(str(ref))


def download_adapter(tracking_uri: str, name: str, version: str, destination: Path) -> Path:
    """The adapter folder of `models:/NAME/VERSION`, downloaded once into `destination/VERSION`.

    Safe when several processes share `destination` (server replicas on one volume): each downloads
    into its own temporary folder and the first to finish renames it into place.
    """
    import shutil
    import tempfile

    import mlflow

    target = destination / str(version)
    if (target / "adapter_config.json").is_file():
        return target
    client(tracking_uri)
    destination.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".partial", dir=destination))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(partial)))
        found = next((p.parent for p in local.rglob("adapter_config.json")), None)
        if found is None:
            raise RegistryError(f"models:/{name}/{version} holds no adapter_config.json")
        try:
            found.rename(target)  # atomic: a crashed download never looks complete
        except OSError:
            if not (target / "adapter_config.json").is_file():  # not another process finishing first
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target
