# syntax=docker/dockerfile:1
# One image for every openreel process; the command picks the role:
#   openreel api | openreel worker | openreel io-worker | openreel fetch-weights | openreel keys ...
# docker-compose.yml wires them together. Model weights are not in the image: the Hugging Face
# cache lives on a volume at HF_HOME, filled once by `openreel fetch-weights`.
#
# The base matches torch's build: PyPI's torch 2.13.0 wheel (pinned in requirements/constraints.txt)
# is built for CUDA 13.0, which needs an NVIDIA driver of the 580 series or newer. The wheel brings
# its own CUDA libraries; the base image declares that requirement (NVIDIA_REQUIRE_CUDA), so the
# NVIDIA container toolkit refuses an older driver at start instead of torch failing later.
# Another CUDA needs another torch build, not just another base.
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install --yes --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# Ubuntu's image already has uid 1000 ('ubuntu'). The volume mount points are made here, owned
# by openreel, so named volumes start out writable by it.
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin openreel \
 && install --directory --owner openreel --group openreel /data /hf-cache

ENV VIRTUAL_ENV=/opt/openreel \
    PATH=/opt/openreel/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1
RUN python3 -m venv /opt/openreel

# Every install below is held to the pins the test suite ran with (refresh them with
# `.venv/bin/python scripts/gen_constraints.py`). Layers go from the least to the most often
# changed: torch (several GB with its CUDA libraries), the other dependencies, the project.
COPY requirements/constraints.txt /opt/openreel/constraints.txt
RUN pip install --constraint /opt/openreel/constraints.txt torch
RUN --mount=type=bind,source=pyproject.toml,target=/tmp/pyproject.toml \
    python -c "import tomllib; print(*tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
      > /tmp/dependencies.txt \
 && pip install --constraint /opt/openreel/constraints.txt --requirement /tmp/dependencies.txt \
 && rm /tmp/dependencies.txt
# The source is mounted, not copied: only the installed package ends up in the image. setuptools
# comes pinned with the dependencies, so the build needs no isolated environment of its own.
RUN --mount=type=bind,target=/src,rw \
    pip install --constraint /opt/openreel/constraints.txt --no-build-isolation /src \
 && pip check

# The API must listen beyond the container's loopback; it still refuses to without API keys.
ENV OPENREEL_HOST=0.0.0.0 \
    OPENREEL_DATA_DIR=/data \
    HF_HOME=/hf-cache
USER openreel
WORKDIR /data
EXPOSE 8000

# One check for every role: it reads the role from the command (see openreel/healthcheck.py).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-m", "openreel.healthcheck"]

CMD ["openreel", "api"]
