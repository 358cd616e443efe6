"""Where steps and training run: on this machine by default, on Kubernetes when the settings say so.

Both switches use Dagster's own clients (dagster-k8s), not a distribution layer of ours:

- ``RAGTUNE_EXECUTOR=k8s``: every step of a run is a Kubernetes job (``k8s_job_executor``);
  ``multiprocess``: every step is a process on this machine. Steps then hand values over through
  files in the data home (a shared volume on Kubernetes), one folder per run, instead of memory.
- ``RAGTUNE_TRAINING_LAUNCHER=k8s``: ``lora_adapter`` starts ``python -m training.sft`` in a pod
  built from ``RAGTUNE_TRAINING_POD_SPEC`` (a GPU request and the data home volume) with
  ``PipesK8sClient``; logs, metrics and the summary come back over Dagster Pipes as they do from
  the local subprocess.

The run launcher (each run in its own pod) is instance configuration: deploy/k8s/dagster.yaml.
"""

import sys
from pathlib import Path

import dagster as dg
import yaml
from dagster._core.storage.fs_io_manager import PickledObjectFilesystemIOManager  # not re-exported by `dagster`
from upath import UPath

from ragtune.settings import Settings


def executor_for(settings: Settings) -> dg.ExecutorDefinition:
    """The executor of the asset jobs (runs launched by the daemon or the UI; `ragtune refresh` and
    `ragtune retrain` always execute in their own process)."""
    if settings.executor == "k8s":
        from dagster_k8s import k8s_job_executor

        # The step image defaults to the run's own image (the code location's), so nothing to repeat here.
        return k8s_job_executor.configured(
            {"job_namespace": settings.k8s_namespace, "max_concurrent": 4}, name="ragtune_k8s_steps"
        )
    if settings.executor == "multiprocess":
        return dg.multiprocess_executor
    return dg.in_process_executor


class RunScopedPickleIOManager(PickledObjectFilesystemIOManager):
    """Step outputs pickled under BASE/RUN_ID/ASSET: two runs at once never read each other's values."""

    def get_asset_relative_path(self, context: dg.InputContext | dg.OutputContext) -> UPath:
        run_id = context.run_id if isinstance(context, dg.OutputContext) else context.upstream_output.run_id
        return UPath(run_id, *context.asset_key.path)


@dg.io_manager(config_schema={"base_dir": str}, description="Step outputs as files, one folder per run.")
def run_scoped_io_manager(init_context) -> RunScopedPickleIOManager:
    return RunScopedPickleIOManager(base_dir=init_context.resource_config["base_dir"])


def io_manager_for(settings: Settings):
    """In memory when one process runs every step; files on the (shared) data home when steps are processes or pods."""
    if settings.executor == "in_process":
        return dg.mem_io_manager
    return run_scoped_io_manager.configured({"base_dir": str(settings.step_outputs_dir)})


def training_client(settings: Settings) -> dg.PipesClient:
    if settings.training_launcher == "k8s":
        from dagster_k8s import PipesK8sClient

        return PipesK8sClient()  # in-cluster credentials inside a pod, ~/.kube/config elsewhere
    return dg.PipesSubprocessClient()


def training_pod_spec(settings: Settings) -> dict:
    """The base pod spec of a training pod, read from RAGTUNE_TRAINING_POD_SPEC, with its problems named."""
    path = Path(settings.training_pod_spec)
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"RAGTUNE_TRAINING_POD_SPEC {path}: {e}") from e
    if not isinstance(spec, dict) or not isinstance(spec.get("containers"), list) or not spec["containers"]:
        raise ValueError(f"RAGTUNE_TRAINING_POD_SPEC {path}: expected a pod spec with a `containers` list")
    return spec


def launch_training(
    client: dg.PipesClient, context: dg.AssetExecutionContext, python_args: list[str], env: dict[str, str], settings: Settings
) -> dg.PipesClientCompletedInvocation:
    """Run `python *python_args` through Dagster Pipes, locally or in a pod, and wait for it.

    Which one follows the client the Definitions were built with (`training_client`), so the two never disagree.
    """
    if isinstance(client, dg.PipesSubprocessClient):
        return client.run(context=context, command=[sys.executable, *python_args], env=env)
    if not settings.training_image:
        raise ValueError("RAGTUNE_TRAINING_LAUNCHER=k8s needs RAGTUNE_TRAINING_IMAGE (the image with ragtune installed)")
    command = ["python", *python_args]  # the image's interpreter
    return client.run(
        context=context,
        image=settings.training_image,
        command=command,
        env=env,
        namespace=settings.k8s_namespace,
        base_pod_spec=training_pod_spec(settings),
    )
