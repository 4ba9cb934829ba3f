# sdrindex service: FastAPI/uvicorn over a bundle kept on a volume.
#   docker compose up        (see docker-compose.yml; the first start builds the default
#                             MNIST bundle into the volume, a few minutes, then serves)
FROM python:3.11-slim-bookworm

# libgomp1: numba's OpenMP threading layer (thread-safe, unlike its fallback workqueue).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 sdrindex \
 && mkdir -p /bundles /var/cache/numba \
 && chown sdrindex:sdrindex /bundles /var/cache/numba

WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    NUMBA_CACHE_DIR=/var/cache/numba \
    SDRINDEX_MNIST_DIR=/app/data/mnist \
    SDRINDEX_BUNDLE=/bundles/mnist

# Dependencies first (a layer that survives code changes).
COPY pyproject.toml README.md ./
RUN mkdir -p sdrindex service/sdr_service \
 && touch sdrindex/__init__.py service/sdr_service/__init__.py \
 && pip install ".[service]" \
 && pip uninstall -y sdrindex \
 && rm -rf sdrindex service build

COPY data/ ./data/
COPY sdrindex/ ./sdrindex/
COPY service/ ./service/
# Editable: the demo page (service/sdr_service/static) is read from the source tree.
RUN pip install --no-deps -e . \
 && chown -R sdrindex:sdrindex /var/cache/numba

USER sdrindex
# Compile numba's kernels into its cache now, so that a start takes seconds, not minutes.
# (A 300-digit bundle through the pipeline, with the calibration and Ridge decoder, loaded
# and warmed as a worker does it.)
RUN python -c "import tempfile; from sdrindex.images import load_source; \
from sdrindex.pipeline import build_bundle; from sdrindex.sp import sp_from_config; \
from sdr_service.state import BundleService; from sdr_service.settings import Settings; \
d = tempfile.mkdtemp() + '/b'; data = load_source(None, None, 300); \
build_bundle(data.images, data.labels, sp=sp_from_config(None), threshold=128, \
backend='nndescent', decoders=['calibration', 'ridge']).save(d); \
s = BundleService(Settings(bundle=d)); s.start(); assert s.ready(), s.reason" \
 && rm -rf /tmp/*

VOLUME ["/bundles"]
EXPOSE 8000
# Ready only once the bundle is loaded and warmed; the first start builds it (minutes).
HEALTHCHECK --interval=10s --timeout=3s --start-period=1800s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
CMD ["python", "-m", "sdr_service.serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
