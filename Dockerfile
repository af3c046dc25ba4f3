# boltzgen service image.
#   CPU:  docker build -t boltzgen .
#   CUDA: docker build -t boltzgen:cuda --build-arg VARIANT=cuda .
#   Ray:  add --build-arg EXTRAS=server,postgres,ray
# Shipped inputs (data/: the example PDB and MD sets) are in the image at /opt/boltzgen/data
# (BOLTZGEN_DATA); the state (SQLite store, job directories, artifacts, models, the generated
# admin key) lives on the /var/lib/boltzgen volume (BOLTZGEN_STATE_DIR). A volume mounted there
# never hides the shipped data, and an image upgrade never hides the state.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ARG VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_CPU=https://download.pytorch.org/whl/cpu
ARG TORCH_INDEX_CUDA=https://download.pytorch.org/whl/cu126
ARG EXTRAS=server,postgres
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, from the wheel index matching the variant (the CPU wheels are ~10x smaller)
RUN python -m venv /opt/venv \
    && if [ "$VARIANT" = "cuda" ]; then index="$TORCH_INDEX_CUDA"; else index="$TORCH_INDEX_CPU"; fi \
    && pip install "torch==${TORCH_VERSION}" --index-url "$index"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY boltzgen ./boltzgen
COPY server ./server
# cuda adds OpenMM's CUDA plugin (openmm[cuda12]); the NVIDIA driver comes from the host.
# This installs the project itself; its dependencies are pinned/bounded in pyproject.toml.
# hadolint ignore=DL3013
RUN extras="$EXTRAS"; if [ "$VARIANT" = "cuda" ]; then extras="$extras,cuda"; fi \
    && pip install ".[${extras}]"

FROM python:${PYTHON_VERSION}-slim-bookworm
ARG VARIANT=cpu
LABEL org.opencontainers.image.title="boltzgen" \
      org.opencontainers.image.description="Boltzmann generators as a REST service" \
      org.opencontainers.image.licenses="MIT" \
      io.boltzgen.variant="${VARIANT}"
RUN groupadd --system --gid 10001 boltzgen \
    && useradd --system --uid 10001 --gid boltzgen --home-dir /var/lib/boltzgen \
       --shell /usr/sbin/nologin boltzgen \
    && mkdir -p /var/lib/boltzgen \
    && chown boltzgen:boltzgen /var/lib/boltzgen \
    && chmod 0750 /var/lib/boltzgen
COPY --from=build /opt/venv /opt/venv
WORKDIR /opt/boltzgen
# read-only for the service user: owned by root
COPY data /opt/boltzgen/data
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    BOLTZGEN_DATA=/opt/boltzgen/data \
    BOLTZGEN_STATE_DIR=/var/lib/boltzgen \
    BOLTZGEN_HOST=0.0.0.0 \
    BOLTZGEN_PORT=8000
VOLUME ["/var/lib/boltzgen"]
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=40s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["boltzgen"]
CMD ["serve"]
