"""Shared fixtures: the real embedder, temporary data homes, a small real corpus."""

import os
import shutil
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "examples" / "apibench"
APIBENCH = REPO.parent / "shared" / "data" / "apibench"


@pytest.fixture(scope="session")
def embedder():
    from ragtune.embedder import load_embedder
    from ragtune.settings import load_settings

    return load_embedder(load_settings().embedder_path())


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
