"""The scale-out switches of deploy/, checked without a cluster.

- Kubernetes (dagster-k8s): deploy/k8s/dagster.yaml passes Dagster's instance schema and builds a
  real K8sRunLauncher, whose run-worker Job is constructed and inspected; every manifest in
  deploy/k8s/ragtune.yaml parses strictly into its Kubernetes model, with the camelCase keys
  kubectl takes; RAGTUNE_EXECUTOR=k8s gives the jobs dagster-k8s' step executor, and the file
  handover it needs between steps is exercised by a real run with one process per step;
  RAGTUNE_TRAINING_LAUNCHER=k8s gives lora_adapter a PipesK8sClient, and the pod
  `launch_training` asks it for (GPU, data home, Pipes context) is built and inspected.
- Object storage: an S3-compatible server on loopback (moto's standalone server) holds the
  LanceDB index through a real `ragtune refresh` and `ragtune search`, and MLflow's artifacts.
- MLflow tracking server: started with the arguments of the manifest's container; registering,
  promoting, rolling back and downloading an adapter all go over HTTP.
"""

import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from conftest import free_port, make_adapter, register_versions, run_cli, wait_for_http

from pipelines.step_outputs import DAY, prune_step_outputs
from ragtune.settings import REPO_ROOT, load_settings

K8S = REPO_ROOT / "deploy" / "k8s"
BUCKET = "ragtune-test"
IMAGE = "registry.example/ragtune:1.0"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """An S3-compatible object store on loopback with one bucket; yields the client environment."""
    import boto3

    port = free_port()
    log = tmp_path_factory.mktemp("s3") / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(endpoint, server)
        env = {
            "AWS_ACCESS_KEY_ID": "test-key",
            "AWS_SECRET_ACCESS_KEY": "test-secret",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT": endpoint,
            "AWS_ALLOW_HTTP": "true",  # LanceDB (object_store)
            "MLFLOW_S3_ENDPOINT_URL": endpoint,
        }  # MLflow (boto3)
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="test-key",
            aws_secret_access_key="test-secret",
        )
        client.create_bucket(Bucket=BUCKET)
        yield {"env": env, "client": client}
    finally:
        server.terminate()
        server.wait(timeout=30)


def object_keys(s3, prefix: str) -> list[str]:
    pages = s3["client"].get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def manifests() -> list[dict]:
    return [doc for doc in yaml.safe_load_all((K8S / "ragtune.yaml").read_text()) if doc]


def manifest(kind: str, name: str) -> dict:
    return next(m for m in manifests() if m["kind"] == kind and m["metadata"]["name"] == name)


# -- Kubernetes -----------------------------------------------------------------------------------
# What deploy/README.md tells operators to put in the `ragtune-secrets` Secret; the rest is the ragtune-env ConfigMap.
SECRET_KEYS = {
    "RAGTUNE_PG_PASSWORD",
    "MLFLOW_BACKEND_STORE_URI",
    "RAGTUNE_INTERACTIONS_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}


def cluster_env() -> dict[str, str]:
    """What every ragtune pod sees: the ConfigMap's values, and placeholders for the Secret's."""
    return {**manifest("ConfigMap", "ragtune-env")["data"], **{key: f"secret-{key}" for key in SECRET_KEYS}}


def env_references(node) -> set[str]:
    """Every `{env: NAME}` in a Dagster instance file."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(env_references(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(env_references(v) for v in node))
    return set()


def assert_kubectl_keys(model, doc: dict, where: str) -> None:
    """Every key is the camelCase name the Kubernetes API takes, at every depth (kubectl rejects snake_case)."""
    import kubernetes.client as k8s

    by_json_name = {json_name: attr for attr, json_name in model.attribute_map.items()}
    for key, value in doc.items():
        assert key in by_json_name, f"{where}.{key}: not a field of {model.__name__}"
        kind = model.openapi_types[by_json_name[key]]
        inner = kind[5:-1] if kind.startswith("list[") else kind
        nested = getattr(k8s, inner, None)
        for item in value if kind.startswith("list[") else [value]:
            if nested is not None and isinstance(item, dict):
                assert_kubectl_keys(nested, item, f"{where}.{key}")


def kubeconfig(path: Path) -> Path:
    """A kubeconfig naming a cluster on loopback that is never contacted: building objects needs no API server."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "test",
                "clusters": [{"name": "test", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "test", "user": {"token": "test"}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": "ragtune"}}],
            }
        )
    )
    return path


def test_k8s_instance_builds_a_run_launcher_and_its_run_pods(tmp_path, monkeypatch):
    from dagster import DagsterRun
    from dagster._core.instance.config import dagster_instance_config
    from dagster._serdes import ConfigurableClassData
    from dagster_k8s import K8sRunLauncher
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import construct_dagster_k8s_job
    from kubernetes.client import ApiClient

    env = cluster_env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config, _ = dagster_instance_config(str(K8S), "dagster.yaml")  # Dagster's own schema: raises on a wrong key
    missing = env_references(config) - set(env)
    assert not missing, f"deploy/k8s/dagster.yaml reads {missing}, which no pod is given"
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator" and config["concurrency"]["pools"]["default_limit"] == 1

    launcher_config = dict(config["run_launcher"]["config"])
    assert launcher_config["load_incluster_config"] is True  # in the cluster; here a kubeconfig instead
    launcher_config.update(load_incluster_config=False, kubeconfig_file=str(kubeconfig(tmp_path / "kubeconfig")))
    launcher = ConfigurableClassData(
        config["run_launcher"]["module"], config["run_launcher"]["class"], yaml.safe_dump(launcher_config)
    ).rehydrate(K8sRunLauncher)
    assert (launcher.job_namespace, launcher.service_account_name) == ("ragtune", "ragtune")

    run = DagsterRun(job_name="adapter_retrain", run_id="0123abcd-0000-4000-8000-000000000000")
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=False)
    # The run image is the code location's (DAGSTER_CURRENT_IMAGE on the webserver and daemon).
    job = construct_dagster_k8s_job(
        context.get_k8s_job_config(job_image=IMAGE, run_launcher=launcher),
        args=["dagster", "api", "execute_run", "{}"],
        job_name="dagster-run-0123abcd",
        pod_name="dagster-run-0123abcd",
        component="run_worker",
        user_defined_k8s_config=context.run_k8s_config,
    )
    body = ApiClient().sanitize_for_serialization(job)
    pod = body["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == IMAGE and pod["serviceAccountName"] == "ragtune"
    assert {"configMapRef": {"name": "ragtune-env"}} in container["envFrom"]
    assert {"secretRef": {"name": "ragtune-secrets"}} in container["envFrom"]
    assert {"name": "data-home", "mountPath": "/data/ragtune"} in container["volumeMounts"]
    assert {"name": "data-home", "persistentVolumeClaim": {"claimName": "ragtune-home"}} in pod["volumes"]
    assert {"name": "training-pod", "mountPath": "/etc/ragtune"} in container["volumeMounts"]  # RAGTUNE_TRAINING_POD_SPEC
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "8Gi"}
    assert {"name": "DAGSTER_HOME", "value": "/opt/dagster/dagster_home"} in container["env"]


def test_k8s_manifests_parse_strictly_and_agree(monkeypatch):
    import kubernetes.client as k8s
    from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict

    docs = manifests()
    for doc in docs:
        model = getattr(k8s, doc["apiVersion"].split("/")[-1].capitalize() + doc["kind"])
        assert_kubectl_keys(model, doc, f"{doc['kind']}/{doc['metadata']['name']}")  # a misspelt or snake_case key fails
        assert k8s_model_from_dict(model, k8s_snake_case_dict(model, doc)).kind == doc["kind"]  # a missing required one fails
    assert_kubectl_keys(k8s.V1PodSpec, yaml.safe_load((K8S / "training-pod.yaml").read_text()), "training-pod")
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {
        ("Deployment", "dagster-webserver"),
        ("Deployment", "dagster-daemon"),
        ("Deployment", "mlflow"),
        ("Service", "mlflow"),
        ("Deployment", "ragtune-serve"),
        ("PersistentVolumeClaim", "ragtune-home"),
        ("ServiceAccount", "ragtune"),
        ("RoleBinding", "ragtune-launcher"),
    } <= kinds

    env = manifest("ConfigMap", "ragtune-env")["data"]
    instance = yaml.safe_load((K8S / "dagster.yaml").read_text())["run_launcher"]["config"]
    training = yaml.safe_load((K8S / "training-pod.yaml").read_text())
    # Every pod sees the data home at the same path, from the same claim: paths written by one resolve in another.
    data_home = {"name": "data-home", "mount_path": env["RAGTUNE_HOME"]}
    assert data_home in instance["volume_mounts"]
    assert data_home in [k8s_snake_case_dict(k8s.V1VolumeMount, m) for m in training["containers"][0]["volumeMounts"]]
    claim = {"name": "data-home", "persistent_volume_claim": {"claim_name": "ragtune-home"}}
    assert claim in instance["volumes"] and claim in [k8s_snake_case_dict(k8s.V1Volume, v) for v in training["volumes"]]
    # Run pods read the training pod spec from its ConfigMap, where RAGTUNE_TRAINING_POD_SPEC points.
    mount = next(m for m in instance["volume_mounts"] if m["name"] == "training-pod")
    assert env["RAGTUNE_TRAINING_POD_SPEC"] == f"{mount['mount_path']}/training-pod.yaml"
    for deployment in ("dagster-webserver", "dagster-daemon"):  # both load the instance from its ConfigMap
        volumes = manifest("Deployment", deployment)["spec"]["template"]["spec"]["volumes"]
        assert instance["instance_config_map"] in {v.get("configMap", {}).get("name") for v in volumes}
    # The ConfigMap is a valid ragtune configuration.
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = load_settings()
    assert (s.index_uri, s.training_launcher, s.tracking_uri) == ("s3://ragtune/lancedb", "k8s", "http://mlflow:5000")
    assert s.artifact_root() is None  # artifacts go through the tracking server


def test_k8s_step_executor_and_gpu_training_pod(tmp_path, monkeypatch):
    import dagster as dg
    from dagster._config import process_config
    from dagster_k8s import PipesK8sClient
    from dagster_k8s.pipes import build_pod_body
    from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR
    from kubernetes.client import ApiClient

    from assets.launchers import RunScopedPickleIOManager, launch_training, training_pod_spec
    from pipelines.definitions import build_definitions

    s = load_settings(home=str(tmp_path / "home"), executor="k8s", training_launcher="k8s", training_image=IMAGE)
    defs = build_definitions(s)
    for name in ("index_refresh", "interaction_curation", "adapter_retrain"):
        executor = defs.resolve_job_def(name).executor_def
        assert executor.name == "ragtune_k8s_steps"
        assert process_config(executor.config_schema.config_type, {}).success  # configured: nothing left to fill
    with dg.build_resources({"io_manager": defs.resources["io_manager"]}) as built:  # steps in separate pods hand over files
        assert isinstance(built.io_manager, RunScopedPickleIOManager)
        assert str(built.io_manager._base_path) == str(s.home_dir / "step_outputs")
    assert isinstance(defs.resources["training_pipes"], PipesK8sClient)
    assert defs.resolve_job_def("champion_rollback").executor_def.name == "in_process"

    # What lora_adapter asks the PipesK8sClient for, recorded; then the pod dagster-k8s builds from it.
    class Recorder:
        def run(self, **kwargs):
            self.kwargs = kwargs

    recorder = Recorder()
    launch_training(
        recorder, "context", ["-m", "training.sft", "--config", "/data/ragtune/runs/r1/sft.yaml"], {"HF_HUB_OFFLINE": "1"}, s
    )
    asked = recorder.kwargs
    assert (asked["image"], asked["namespace"], asked["context"]) == (IMAGE, "ragtune", "context")
    assert asked["command"] == ["python", "-m", "training.sft", "--config", "/data/ragtune/runs/r1/sft.yaml"]
    assert asked["base_pod_spec"] == training_pod_spec(s)
    body = ApiClient().sanitize_for_serialization(
        build_pod_body(
            "ragtune-train-r1",
            asked["image"],
            asked["command"],
            {**asked["env"], DAGSTER_PIPES_CONTEXT_ENV_VAR: "encoded"},
            None,
            asked["base_pod_spec"],
        )
    )
    container = body["spec"]["containers"][0]
    assert (container["image"], container["command"], body["spec"]["restartPolicy"]) == (IMAGE, asked["command"], "Never")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"name": DAGSTER_PIPES_CONTEXT_ENV_VAR, "value": "encoded"} in container["env"]
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in container["env"]
    assert {"configMapRef": {"name": "ragtune-env"}} in container["envFrom"]  # RAGTUNE_HOME, the tracking server
    assert {"name": "data-home", "mountPath": "/data/ragtune"} in container["volumeMounts"]
    assert body["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "ragtune-home"
    assert body["spec"]["automountServiceAccountToken"] is False  # training needs no Kubernetes API

    with pytest.raises(ValueError, match="RAGTUNE_TRAINING_IMAGE"):
        launch_training(PipesK8sClient(), None, ["-m", "training.sft"], {}, s.model_copy(update={"training_image": ""}))
    broken = tmp_path / "pod.yaml"
    broken.write_text("containers: {name: x}\n")
    with pytest.raises(ValueError, match="expected a pod spec with a `containers` list"):
        training_pod_spec(s.model_copy(update={"training_pod_spec": broken}))


@pytest.mark.integration
def test_steps_in_their_own_processes_hand_values_over_through_files_then_pruned(home, corpus, monkeypatch):
    """RAGTUNE_EXECUTOR=multiprocess, run as the daemon runs a job: the file handover k8s step jobs rely on."""
    from dagster import DagsterEventType, DagsterRun, DagsterRunStatus, build_sensor_context

    from pipelines.runner import get_instance
    from pipelines.sensors import step_outputs_pruner
    from ragtune.knowledge.store import ChunkStore

    monkeypatch.setenv("RAGTUNE_EXECUTOR", "multiprocess")
    monkeypatch.setenv("RAGTUNE_SOURCE_DIR", str(corpus))
    s = load_settings()
    instance = get_instance(s)  # the data home's instance; DAGSTER_HOME now points at it
    dagster_bin = str(Path(sys.executable).with_name("dagster"))
    proc = subprocess.run(
        [dagster_bin, "job", "execute", "-m", "pipelines.definitions", "-j", "index_refresh"],
        cwd=REPO_ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    run = instance.get_runs(limit=1)[0]
    assert run.status.value == "SUCCESS"
    starts = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.STEP_START).records
    assert len({r.event_log_entry.dagster_event.pid for r in starts}) == len(starts) >= 5  # a process per step
    handed_over = {p.name for p in (s.step_outputs_dir / run.run_id).iterdir()}
    assert {"raw_documents", "document_chunks"} <= handed_over  # one folder per run: runs at once never mix
    assert ChunkStore(s.lancedb_uri).count() > 40

    # step_outputs_pruner: the folder stays for re-execution while young, goes once old; so does an orphan
    # a re-execution of a re-execution of the run, still going: it may load skipped steps from the run itself
    middle = instance.add_run(
        DagsterRun(job_name="index_refresh", status=DagsterRunStatus.FAILURE, parent_run_id=run.run_id, root_run_id=run.run_id)
    )
    going = instance.add_run(
        DagsterRun(job_name="index_refresh", status=DagsterRunStatus.STARTED, parent_run_id=middle.run_id, root_run_id=run.run_id)
    )
    for name in ("run-deleted-from-history", going.run_id):
        (s.step_outputs_dir / name).mkdir()
        (s.step_outputs_dir / name / "value").write_bytes(b"x" * 1000)
        os.utime(s.step_outputs_dir / name, (time.time() - 30 * DAY, time.time() - 30 * DAY))
    evaluation = step_outputs_pruner(s)(build_sensor_context(instance=instance))
    assert "removed 1 run folders" in evaluation.skip_message and "kept 2" in evaluation.skip_message
    assert not (s.step_outputs_dir / "run-deleted-from-history").exists()
    assert (s.step_outputs_dir / run.run_id).is_dir() and (s.step_outputs_dir / going.run_id).is_dir()
    ended = instance.get_run_record_by_id(run.run_id).end_time
    assert prune_step_outputs(s.step_outputs_dir, instance, keep_days=7, now=ended + 6 * DAY).removed == []
    assert prune_step_outputs(s.step_outputs_dir, instance, keep_days=7, now=ended + 8 * DAY).removed == []
    instance.report_run_failed(instance.get_run_by_id(going.run_id))  # the chain's last run ends
    aged = prune_step_outputs(s.step_outputs_dir, instance, keep_days=7, now=time.time() + 8 * DAY)
    assert sorted(aged.removed) == sorted([run.run_id, going.run_id]) and aged.bytes_freed > 2000
    assert not any(s.step_outputs_dir.iterdir())


# -- object storage and a tracking server ---------------------------------------------------------
@pytest.mark.integration
def test_index_on_object_storage(home, corpus, s3, monkeypatch, capsys):
    for key, value in s3["env"].items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("RAGTUNE_INDEX_URI", f"s3://{BUCKET}/index")

    first = run_cli(capsys, "refresh", "--source", str(corpus))
    assert first["exit"] == 0 and first["docs_added"] == 40 and first["chunks_embedded"] > 40
    assert any(key.startswith("index/chunks.lance/") for key in object_keys(s3, "index/"))
    assert not (home / "lancedb").exists()  # nothing of the index on local disk

    title = next(line for line in (corpus / sorted(os.listdir(corpus))[0]).read_text().splitlines() if line.startswith("title:"))
    hits = run_cli(capsys, "search", title.split(":", 1)[1].strip(), "--k", "3")
    assert hits["exit"] == 0 and hits["hits"], hits
    again = run_cli(capsys, "refresh", "--source", str(corpus))
    assert again["exit"] == 0 and again["chunks_embedded"] == 0
    status = run_cli(capsys, "index", "status")
    assert status["uri"] == f"s3://{BUCKET}/index" and status["chunks"] == first["chunks_total"]

    # a purge on object storage: the document leaves every version, the old versions' objects go
    doc_id = hits["hits"][0]["doc_id"]
    purged = run_cli(capsys, "index", "purge", "--doc", doc_id, "--reason", "test purge on s3")
    assert purged["exit"] == 0 and purged["rows_deleted"] >= 1
    assert all(h["doc_id"] != doc_id for h in run_cli(capsys, "search", title.split(":", 1)[1].strip(), "--k", "5")["hits"])
    import lancedb

    table = lancedb.connect(f"s3://{BUCKET}/index").open_table("chunks")
    assert [v["version"] for v in table.list_versions()] == [purged["tables"][0]["version_after"]]
    assert table.count_rows(f"doc_id = '{doc_id}'") == 0


@pytest.mark.integration
def test_registry_through_an_mlflow_tracking_server(home, tmp_path, base_model, s3, monkeypatch, capsys):
    from ragtune import registry

    # The manifest's own arguments, with the cluster's values replaced by local ones.
    container = manifest("Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    referenced = set(re.findall(r"\$\((\w+)\)", " ".join(container["args"])))
    assert referenced <= set(cluster_env()) and {"configMapRef": {"name": "ragtune-env"}} in container["envFrom"]
    port = free_port()
    local = {
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path / 'server' / 'mlflow.db'}",
        "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{BUCKET}/mlflow",
    }
    args = [re.sub(r"\$\((\w+)\)", lambda m: local[m.group(1)], a) for a in container["args"]]
    args[args.index("--host") + 1], args[args.index("--port") + 1] = "127.0.0.1", str(port)
    (tmp_path / "server").mkdir()
    mlflow_bin = str(Path(sys.executable).with_name(container["command"][0]))
    with (tmp_path / "server" / "log").open("w") as out:
        server = subprocess.Popen(
            [mlflow_bin, *container["command"][1:], *args], stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **s3["env"]}
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", server)
        monkeypatch.setenv("RAGTUNE_MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
        s = load_settings()
        assert s.artifact_root() is None
        adapter = make_adapter(Path(base_model), tmp_path / "adapter")
        v1, v2 = register_versions(s, ["hash-1", "hash-2"], tmp_path / "unused", adapter=adapter)

        assert run_cli(capsys, "models", "promote", v1, "--reason", "first")["exit"] == 0
        assert run_cli(capsys, "models", "promote", v2, "--reason", "second")["exit"] == 0
        rolled = run_cli(capsys, "models", "rollback", "--reason", "test")
        assert rolled["exit"] == 0 and registry.resolve(s.tracking_uri, s.registered_model, "champion") == v1

        # two replicas sharing one volume download the same version at once: both get it whole
        with ThreadPoolExecutor(2) as pool:
            downloads = list(
                pool.map(
                    lambda _: registry.download_adapter(s.tracking_uri, s.registered_model, v1, tmp_path / "download"), range(2)
                )
            )
        assert downloads[0] == downloads[1] and sorted(p.name for p in (tmp_path / "download").iterdir()) == [v1]
        downloaded = downloads[0]
        assert (downloaded / "adapter_config.json").read_bytes() == (adapter / "adapter_config.json").read_bytes()
        assert any(key.endswith("adapter/adapter_model.safetensors") for key in object_keys(s3, "mlflow/"))
        assert not (home / "mlartifacts").exists() and not (home / "mlflow.db").exists()
    finally:
        server.terminate()
        server.wait(timeout=30)
