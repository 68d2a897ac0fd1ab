# matchjobs: the nightly batch (Ray driver), single-user scoring and the event worker, and a
# Ray node for the nightly's cluster (KubeRay runs `ray start` in it).
# Build: docker build -t matchjobs .
# Run:   docker run --rm -e MATCHJOBS_DATABASE_URL=postgresql://… matchjobs matchjobs run nightly --trigger nightly
# Node:  docker run … matchjobs ray start --head --block …   (no ENTRYPOINT: the command is yours)
# A cluster's nodes and its driver must run the same Ray and Python: Ray 2.60.0, Python 3.11.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    RAY_AUTH_MODE=token \
    HOME=/home/matchjobs

# wget: KubeRay's readiness and liveness probes run it inside the Ray containers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends wget \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 matchjobs

WORKDIR /app

# Dependencies first, pinned by the runtime lock (no test tools), so code changes do not
# rebuild this layer. It holds ray[default]: the jobs CLI, the dashboard and its agent.
COPY pyproject.toml requirements-runtime.lock ./
RUN python -m pip install --no-cache-dir "pip==26.3" \
 && python -m pip install --no-cache-dir -r requirements-runtime.lock

COPY compute/ compute/
COPY jobs/ jobs/
COPY configs/ configs/
COPY scripts/ scripts/
# The working directory belongs to the user the processes run as: Ray, the CLI and reports
# write there (the image's other paths stay read-only to it).
RUN python -m pip install --no-cache-dir --no-deps -e . \
 && chown -R matchjobs:matchjobs /app
USER matchjobs

CMD ["matchjobs", "--help"]
