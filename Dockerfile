# driftwatch image (worker, retrain worker, CLI). Build: docker build -t driftwatch . ;
# run: see docker-compose.yml and deploy/README.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Install dependencies and the package with the pinned transitive set (constraints.txt).
COPY pyproject.toml constraints.txt README.md ./
COPY driftwatch ./driftwatch
COPY runtime ./runtime
COPY schemas ./schemas
COPY streams ./streams
COPY agents ./agents
COPY retrain ./retrain
RUN pip install -c constraints.txt . \
    && rm -rf build *.egg-info

# Run as an unprivileged user; /data (worker state: RocksDB tables, models) and /registry
# (the retrain worker's model registry) are owned by it so a fresh named volume mounted there
# inherits that ownership.
RUN useradd --system --uid 10001 --user-group --home-dir /home/driftwatch --create-home \
        driftwatch \
    && mkdir -p /data /registry \
    && chown driftwatch:driftwatch /data /registry
USER driftwatch

ENV DRIFTWATCH_DATA_DIR=/data \
    DRIFTWATCH_METRICS_PORT=9108 \
    DRIFTWATCH_API_PORT=6066
VOLUME ["/data"]
# 6066: the HTTP API (also /healthz, /readyz); 9108: the worker's Prometheus metrics; 9109:
# `driftwatch retrain-worker`'s (DRIFTWATCH_RETRAIN_METRICS_PORT).
EXPOSE 6066 9108 9109

ENTRYPOINT ["driftwatch"]
CMD ["worker"]
