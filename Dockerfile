# sdrindex service: FastAPI/uvicorn over a bundle kept on a volume.
#   docker compose up        (see docker-compose.yml: the API key as a secret, a read-only
#                             root filesystem, memory/CPU limits; the first start builds the
#                             default MNIST bundle into the volume, minutes, then serves)
#
# The base image is pinned by its exact tag: CPython 3.11.7 (the interpreter the tests and
# constraints.txt were made with) on Debian 12 "bookworm", slim. Not by digest: no digest of
# this tag could be checked from where this file was written (no registry access). To pin it
# too, take the digest from `docker buildx imagetools inspect python:3.11.7-slim-bookworm`
# and build with --build-arg PYTHON_IMAGE=python:3.11.7-slim-bookworm@sha256:<digest>.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
FROM ${PYTHON_IMAGE}
# The extras installed: "service"; the compose profile `cluster` adds "cluster" (Ray).
ARG EXTRAS=service

# libgomp1: numba's OpenMP threading layer (thread-safe, unlike its fallback workqueue).
# Its version is the one of bookworm's gcc-12 (a stable release: security fixes only).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 sdrindex \
 && mkdir -p /bundles /var/cache/numba \
 && chown sdrindex:sdrindex /bundles /var/cache/numba

WORKDIR /app
# MPLCONFIGDIR: matplotlib's cache in the tmpfs /tmp (the root filesystem is read-only).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NUMBA_CACHE_DIR=/var/cache/numba \
    MPLCONFIGDIR=/tmp/matplotlib \
    SDRINDEX_MNIST_DIR=/app/data/mnist \
    SDRINDEX_BUNDLE=/bundles/mnist

# Dependencies first (a layer that survives code changes), at the exact versions of
# constraints.txt (scripts/lock_deps.py writes it from the tested environment).
COPY pyproject.toml README.md constraints.txt ./
RUN mkdir -p sdrindex service/sdr_service \
 && touch sdrindex/__init__.py service/sdr_service/__init__.py \
 && pip install -c constraints.txt ".[${EXTRAS}]" \
 && pip uninstall -y sdrindex \
 && rm -rf sdrindex service build

COPY data/ ./data/
COPY sdrindex/ ./sdrindex/
COPY service/ ./service/
COPY docker/healthcheck.py ./docker/healthcheck.py
# Editable: the demo page (service/sdr_service/static) is read from the source tree.
# --no-deps: everything it needs is installed above, at the constrained versions.
RUN pip install --no-deps -e . \
 && pip check \
 && chown -R sdrindex:sdrindex /var/cache/numba

USER sdrindex
# Compile numba's kernels into its cache now, so that a start takes seconds, not minutes.
# (A 300-digit bundle through the pipeline, with the calibration and Ridge decoder, loaded
# and warmed as a worker does it.) docker-compose.yml keeps /var/cache/numba on a volume
# (the root filesystem is read-only): a new volume starts as a copy of this cache.
RUN python -c "import tempfile; from sdrindex.images import load_source; \
from sdrindex.pipeline import build_bundle; from sdrindex.sp import sp_from_config; \
from sdr_service.state import BundleService; from sdr_service.settings import Settings; \
d = tempfile.mkdtemp() + '/b'; data = load_source(None, None, 300); \
build_bundle(data.images, data.labels, sp=sp_from_config(None), threshold=128, \
backend='nndescent', decoders=['calibration', 'ridge']).save(d); \
s = BundleService(Settings(bundle=d)); s.start(); assert s.ready(), s.reason" \
 && rm -rf /tmp/*

VOLUME ["/bundles", "/var/cache/numba"]
EXPOSE 8000
# Healthy once ready, or while the first start builds the bundle (nothing listens yet, no
# `current` link); unhealthy when a load failed or is still not done after the start
# period: a failed load trips it within 20 + 3 x 10 = 50 s (docker/healthcheck.py).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "/app/docker/healthcheck.py"]
CMD ["python", "-m", "sdr_service.serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
