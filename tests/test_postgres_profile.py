"""The production profile on a real PostgreSQL server: Dagster storage, MLflow and the interaction log.

The test installs PostgreSQL from the Debian packages when it is missing, starts a server on
loopback in a temporary directory (as the `postgres` user when run as root: the server refuses
root), and points ragtune at it through the environment only (deploy/dagster.yaml,
RAGTUNE_MLFLOW_TRACKING_URI, RAGTUNE_INTERACTIONS_URL). An index refresh and a tiny retrain must
land their runs, events and registry entries in PostgreSQL, and two refreshes launched at once
must not corrupt the index (the lancedb_writer pool of one serialises them).
"""

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import doc_records, free_port, tiny_training_config

from ragtune.locks import exclusive_lock
from ragtune.settings import REPO_ROOT, load_settings

pytestmark = pytest.mark.integration

USER, PASSWORD = "ragtune", "ragtune-test-secret"
DATABASES = ("dagster", "mlflow", "interactions")


def postgres_bin() -> Path:
    with exclusive_lock(Path("/tmp/ragtune-test-apt.lock")):  # both pytest workers may get here at once
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            wait = ["-o", "DPkg::Lock::Timeout=600"]  # and for any other apt-get on the machine
            subprocess.run(["apt-get", *wait, "update", "-qq"], check=True)
            subprocess.run(
                ["apt-get", *wait, "install", "-y", "-qq", "--no-install-recommends", "postgresql"],
                check=True,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
            found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent


def step_window(instance, run_id, step_key="chunk_index"):
    import dagster as dg

    records = instance.all_logs(run_id)
    start = next(
        r.timestamp
        for r in records
        if r.dagster_event and r.dagster_event.event_type == dg.DagsterEventType.STEP_START and r.step_key == step_key
    )
    end = next(
        r.timestamp
        for r in records
        if r.dagster_event and r.dagster_event.event_type == dg.DagsterEventType.STEP_SUCCESS and r.step_key == step_key
    )
    return start, end


def as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def server_command(cmd: list[str], check: bool = True) -> None:
    done = subprocess.run(as_server_user(cmd), capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server on 127.0.0.1 with password auth and one database per component; its URL parts."""
    bin_dir = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="ragtune-pg-"))  # not under pytest's root-only tmp: the server user must reach it
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    (root / "pw").write_text(PASSWORD)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
        shutil.chown(root / "pw", "postgres")
    server_command(
        [str(bin_dir / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={root / 'pw'}", "--auth=scram-sha-256", "-E", "UTF8"]
    )
    port = free_port()
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c max_connections=200"
    server_command([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"])
    admin = sa.create_engine(f"postgresql+psycopg2://{USER}:{PASSWORD}@127.0.0.1:{port}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in DATABASES:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    yield {"host": "127.0.0.1", "port": port}
    server_command([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], check=False)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def on_postgres(postgres, home, monkeypatch):
    """Every store of this data home on the server, configured by environment variables only."""
    env = {
        "RAGTUNE_DAGSTER_YAML": str(REPO_ROOT / "deploy" / "dagster.yaml"),
        "RAGTUNE_PG_HOST": postgres["host"],
        "RAGTUNE_PG_PORT": str(postgres["port"]),
        "RAGTUNE_PG_USER": USER,
        "RAGTUNE_PG_PASSWORD": PASSWORD,
        "RAGTUNE_PG_DAGSTER_DB": "dagster",
        "RAGTUNE_MLFLOW_TRACKING_URI": f"postgresql+psycopg2://{USER}:{PASSWORD}@{postgres['host']}:{postgres['port']}/mlflow",
        "RAGTUNE_INTERACTIONS_URL": f"postgresql+psycopg2://{USER}:{PASSWORD}@{postgres['host']}:{postgres['port']}/interactions",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return lambda db: sa.create_engine(f"postgresql+psycopg2://{USER}:{PASSWORD}@{postgres['host']}:{postgres['port']}/{db}")


def scalar(engine, query: str):
    with engine.connect() as conn:
        return conn.execute(sa.text(query)).scalar()


def test_refresh_and_a_tiny_retrain_land_in_postgres(on_postgres, corpus, base_model, tmp_path, monkeypatch):
    from pipelines.runner import get_instance, run_job
    from ragtune.behaviour.interactions import InteractionLog

    monkeypatch.setenv("RAGTUNE_BASE_MODEL", base_model)
    s = load_settings()
    instance = get_instance(s)
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    dagster, mlflow, interactions = (on_postgres(db) for db in DATABASES)
    runs_before = scalar(dagster, "SELECT count(*) FROM runs WHERE status = 'SUCCESS'")
    assert run_job(s, "index_refresh", {"ops": {"raw_documents": {"config": {"source_dir": str(corpus)}}}}).success

    InteractionLog(s.interactions_db).extend(doc_records(corpus)[:8])
    tiny = tiny_training_config(tmp_path / "tiny.yaml")
    run_config = {
        "ops": {
            "evaluation_set": {"config": {"min_items": 1, "holdout": 0.3}},
            "raft_dataset": {"config": {"distractors": 1}},
            "lora_adapter": {"config": {"training_config": str(tiny)}},
        }
    }
    outcome = run_job(
        s,
        "adapter_retrain",
        run_config,
        output_nodes=("lora_adapter",),
        assets=["interaction_logs", "curated_interactions", "evaluation_set", "raft_dataset", "lora_adapter"],
    )
    assert outcome.success, outcome.error

    assert scalar(dagster, "SELECT count(*) FROM runs WHERE status = 'SUCCESS'") == runs_before + 2
    assert scalar(dagster, "SELECT count(*) FROM event_logs WHERE asset_key LIKE '%chunk_index%'") > 0
    assert scalar(mlflow, f"SELECT count(*) FROM model_versions WHERE name = '{s.registered_model}'") == 1
    assert scalar(mlflow, "SELECT count(*) FROM metrics WHERE key = 'train_loss'") >= 1
    assert scalar(interactions, "SELECT count(*) FROM interactions") == 8
    assert not (s.home_dir / "mlflow.db").exists() and not (s.home_dir / "interactions.db").exists()
    assert not list(s.dagster_home.glob("**/*.db"))  # no sqlite fallback anywhere


def test_two_refreshes_at_once_are_serialised_by_the_pool(on_postgres, corpus, postgres):
    import dagster as dg

    from pipelines.runner import get_instance
    from ragtune.knowledge.store import ChunkStore

    s = load_settings()
    get_instance(s)  # schemas first, then two processes at once
    cmd = [sys.executable, "-m", "ragtune.cli", "refresh", "--source", str(corpus), "--json"]
    env = {**os.environ, "RAGTUNE_WRITE_BATCH": "8"}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err[-2000:]
    instance = get_instance(s)
    runs = instance.get_runs(filters=dg.RunsFilter(job_name="index_refresh"))
    assert len(runs) >= 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs[:2])
    (a0, a1), (b0, b1) = sorted(step_window(instance, r.run_id) for r in runs[:2])
    assert a1 <= b0, "the two chunk_index steps overlapped"
    ids = ChunkStore(s.lancedb_uri).read_columns(["chunk_id"]).column("chunk_id").to_pylist()
    assert ids and len(ids) == len(set(ids))
