"""Shared fixtures: the real embedder, temporary data homes, a small real corpus."""

import os
import shutil
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two pytest-xdist workers on two cores: one torch thread each (and in the
    # subprocesses they start), rather than two processes of two threads fighting over the cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

# The longest tests start first, so neither worker is left running one alone at the end.
LONGEST_FIRST = (
    "test_release_loop.py",
    "test_cli.py::test_demo_runs",
    "test_postgres_profile.py",
    "test_dagster_ui.py",
    "test_cli.py::test_demo_refreshes",
    "test_behaviour_pipeline.py::test_retrain",
    "test_crash_recovery.py",
    "test_cli.py::test_refresh_search",
)


# Fixtures that make a test slow: the base model (converted from its GGUF, then run) and what needs it.
SLOW_FIXTURES = {"base_model", "tokenizer"}


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        return next((i for i, name in enumerate(LONGEST_FIRST) if name in item.nodeid), len(LONGEST_FIRST))

    items.sort(key=rank)
    for item in items:  # `make test-fast` leaves these out
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "examples" / "apibench"
APIBENCH = REPO.parent / "shared" / "data" / "apibench"


def free_port() -> int:
    """A TCP port free on loopback right now, for a server a test starts."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, process, seconds: float = 240) -> None:
    """Until `url` answers below 500; fails early, naming the program, if the server process exits.

    The deadline is generous: a server starting on a loaded 2-core CI machine (MLflow migrating a
    fresh database, say) can take minutes, and a healthy one returns as soon as it answers.
    """
    import time

    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {seconds} s")


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def browser(profile: Path):
    """Headless Chromium from the Debian packages (make browser installs them), driven by Selenium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    assert not missing, f"{missing} missing: run `make browser` (apt-get install chromium chromium-driver)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1400,900",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


# A document restricted to the finance group, and the secret only finance may ever see (serving tests).
SECRET = "ZEBRA-PLUM-4417"
PAYROLL = f"""---
title: Payroll export procedure
acl: [finance]
---
# Payroll export procedure

The payroll export key is {SECRET}. Finance staff export the monthly salary file from the payroll
system with this key, then upload the salary export to the bank portal before the 25th.
"""


def small_served_home(root: Path, embedder, base_model, documents: int, extra: dict[str, str] | None = None):
    """Settings of a data home under `root` whose index holds the first `documents` demo documents plus
    `extra` ({file name: markdown text}), embedded for real."""
    from ragtune.knowledge.chunker import chunk_document
    from ragtune.knowledge.documents import load_documents
    from ragtune.knowledge.indexing import refresh_index
    from ragtune.knowledge.store import ChunkStore
    from ragtune.settings import load_settings

    docs = root / "docs"
    docs.mkdir()
    for path in sorted((DEMO / "docs").glob("*.md"))[:documents]:
        shutil.copy(path, docs / path.name)
    for name, text in (extra or {}).items():
        (docs / name).write_text(text)
    settings = load_settings(home=str(root / "home"), base_model=str(base_model))
    load = load_documents(docs)
    chunks = [
        c for d in load.documents for c in chunk_document(d, embedder.counter, settings.chunk_tokens, settings.chunk_overlap)
    ]
    refresh_index(load, chunks, ChunkStore(settings.lancedb_uri, settings.table_name, embedder.dim), embedder)
    return settings


def serve_in_background(settings, base_model, root: Path, env: dict[str, str]):
    """A real `ragtune serve` on a free loopback port for this data home, until the generator is closed:
    yields its base url; fails the test with the server's log if it does not come up."""
    import signal
    import subprocess
    import sys

    port = free_port()
    full_env = {**os.environ, "RAGTUNE_HOME": str(settings.home_dir), "RAGTUNE_BASE_MODEL": str(base_model), **env}
    log_path = root / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ragtune.cli", "serve", "--port", str(port)],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_http(f"{url}/healthz", process)
        except (RuntimeError, TimeoutError) as e:
            process.kill()
            pytest.fail(f"the server did not come up ({e}):\n{log_path.read_text()[-3000:]}")
        try:
            yield url
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def run_cli(capsys, *argv) -> dict:
    """Run `ragtune ARGV --json` in this process; its JSON line plus the exit status."""
    import json

    from ragtune.cli import main as cli

    capsys.readouterr()
    code = cli([*argv, "--json"])
    out = capsys.readouterr().out
    return {"exit": code, **json.loads(out.strip().splitlines()[-1])}


@pytest.fixture(scope="session")
def embedder():
    from ragtune.knowledge.embedder import load_embedder
    from ragtune.settings import load_settings

    return load_embedder(load_settings().embedder_path())


@pytest.fixture(autouse=True)
def restore_environment():
    """ragtune's commands set DAGSTER_HOME and RAGTUNE_HOME for the code servers they start; no test
    passes them (or anything else it set) on to the next test its worker runs."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """A fresh data home; RAGTUNE_HOME points at it for this test."""
    path = tmp_path / "home"
    monkeypatch.setenv("RAGTUNE_HOME", str(path))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return path


@pytest.fixture()
def corpus(tmp_path):
    """40 real APIBench documents from the bundled demo, copied so tests may edit them."""
    src = tmp_path / "docs"
    src.mkdir()
    for path in sorted((DEMO / "docs").glob("*.md"))[:40]:
        shutil.copy(path, src / path.name)
    return src


@pytest.fixture(scope="session")
def base_model(tmp_path_factory):
    """The bundled SmolLM2-135M-Instruct, converted from its GGUF once for the whole session."""
    from ragtune.llm.base_model import resolve_base_model

    return resolve_base_model("", tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def tokenizer(base_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_model)


def tiny_training_config(path: Path) -> Path:
    """A one-step LoRA run on two projections: exercises training through the pipeline in seconds."""
    import yaml

    path.write_text(
        yaml.safe_dump(
            {
                "lora_r": 4,
                "lora_alpha": 8,
                "target_modules": ["q_proj", "v_proj"],
                "max_steps": 1,
                "per_device_train_batch_size": 1,
                "max_length": 768,
                "eval_at_end": False,
            }
        )
    )
    return path


def doc_records(docs_dir: Path, n_per_doc: int = 1, feedback: str = "up") -> list[dict]:
    """Interaction records asking about real documents: question from the description, gold = the document."""
    import frontmatter

    records = []
    for path in sorted(docs_dir.glob("*.md")):
        post = frontmatter.load(path)
        lines = [line for line in post.content.splitlines() if line.strip() and not line.startswith(("#", "-", "`"))]
        description = lines[0] if lines else post["title"]
        for i in range(n_per_doc):
            records.append(
                {
                    "id": f"{post['id']}#{i}",
                    "ts": f"2025-01-01T00:{i // 60:02d}:{i % 60:02d}+00:00",
                    "user": f"user{i % 3}",
                    "question": f"Which model should I use for this ({i}): {description[:200]}",
                    "answer": f"Use {post['title']}: it is described as {description[:120]}",
                    "citations": [{"doc_id": post["id"], "chunk_id": None}],
                    "feedback": feedback,
                    "correction": None,
                }
            )
    return records


def make_adapter(base_model: Path, folder: Path, seed: int = 0) -> Path:
    """A real, loadable LoRA adapter for the base model, untrained (LoRA B starts at zero: it answers like the base)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_model)
    get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    ).save_pretrained(folder)
    return folder


def register_versions(settings, digests: list[str], folder: Path, adapter: Path | None = None) -> list[str]:
    """Real MLflow runs, each logging an adapter folder, registered as versions tagged with a dataset hash.

    Without `adapter` the folder holds a placeholder config: enough for registry mechanics, not loadable.
    """
    import mlflow

    from ragtune.registry import ensure_experiment, register_model

    experiment = ensure_experiment(settings.tracking_uri, "test", settings.artifact_root())
    if adapter is not None:
        folder = adapter
    else:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "adapter_config.json").write_text("{}")
    versions = []
    for digest in digests:
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_artifacts(str(folder), "adapter")
        versions.append(
            register_model(settings.tracking_uri, settings.registered_model, run.info.run_id, "adapter", {"dataset_hash": digest})
        )
    return versions


def scored_rows(candidate: str, n: int = 100, probed: int = 60, **shares: float) -> list[dict]:
    """One candidate's per-item harness rows: `n` answer probes (each with its gold document in the context) and
    `probed` unanswerable and counterfactual probes. A metric in `shares` (a summary's name) is 1.0 on the first
    round(share * count) probes of the kinds it applies to and 0.0 on the rest, so two candidates' rows pair item
    by item."""
    counts = {"answer": n, "unanswerable": probed, "counterfactual": probed}
    applies = {"abstention": ("unanswerable",), "adherence": ("counterfactual",), "format_validity": tuple(counts)}
    field = {"false_abstention": "abstained"}  # the row's name for it
    rows = []
    for kind, count in counts.items():
        for i in range(count):
            row = {
                "candidate": candidate,
                "item_id": f"q{i}",
                "kind": kind,
                "gold_doc_ids": [f"doc{i}"],
                "retrieved": [f"doc{i}", "other"] if kind == "answer" else ["other"],
            }
            row.update(
                {
                    field.get(metric, metric): float(i < round(share * count))
                    for metric, share in shares.items()
                    if kind in applies.get(metric, ("answer",))
                }
            )
            rows.append(row)
    return rows
