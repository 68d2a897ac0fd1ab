# matchjobs: the nightly batch (Ray driver), single-user scoring and the event worker.
# Build: docker build -t matchjobs .
# Run:   docker run --rm -e MATCHJOBS_DATABASE_URL=postgresql://… matchjobs run nightly --trigger nightly
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0

WORKDIR /app

# Dependencies first, pinned by the lock, so code changes do not rebuild this layer.
COPY pyproject.toml requirements.lock ./
RUN python -m pip install --no-cache-dir "pip==26.3" \
 && grep -v -E '^(pytest|hypothesis|ruff|iniconfig|pluggy|sortedcontainers)==' requirements.lock > /tmp/runtime.lock \
 && python -m pip install --no-cache-dir -r /tmp/runtime.lock

COPY compute/ compute/
COPY jobs/ jobs/
COPY configs/ configs/
COPY scripts/ scripts/
RUN python -m pip install --no-cache-dir --no-deps -e . \
 && useradd --create-home --uid 10001 matchjobs
USER matchjobs

ENTRYPOINT ["matchjobs"]
CMD ["--help"]
