# syntax=docker/dockerfile:1
# mlops-bot: `mlops-bot serve` (webhooks, /healthz, /readyz, /metrics, and the bot's jobs), non-root,
# state in PostgreSQL (MLOPS_STATE_URL) or SQLite, everything else it keeps in the /var/lib/mlops-bot volume.
#
#   docker build -t mlops-bot .
#   docker run --env-file .env -p 8080:8080 -v mlops-bot-data:/var/lib/mlops-bot mlops-bot
#
# See docs/operations.md and compose.yaml (the bot with PostgreSQL).

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: the project and its dependencies in a virtual environment (wheels only, no compiler) ---
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/mlops-bot
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY integrations ./integrations
COPY pipeline ./pipeline
RUN /opt/mlops-bot/bin/pip install ".[postgres]" \
 && /opt/mlops-bot/bin/mlops-bot --help > /dev/null

# --- runtime: the environment, git (the bot reads repositories) and tini (signals, child processes) ---
FROM ${PYTHON_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends git tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 mlops \
 && useradd --system --uid 10001 --gid mlops --home-dir /var/lib/mlops-bot --shell /usr/sbin/nologin mlops \
 && install -d -o mlops -g mlops -m 0750 /var/lib/mlops-bot
COPY --from=build /opt/mlops-bot /opt/mlops-bot
# The bundled example model project: the default project until MLOPS_PROJECT_DIR names yours.
COPY examples /app/examples
ENV PATH=/opt/mlops-bot/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    MLOPS_DATA_DIR=/var/lib/mlops-bot \
    MLOPS_PROJECT_DIR=/app/examples/breast_cancer \
    MLOPS_HOST=0.0.0.0 \
    MLOPS_PORT=8080
WORKDIR /app
USER mlops:mlops
VOLUME ["/var/lib/mlops-bot"]
EXPOSE 8080
# Liveness only: /readyz also asks GitHub, Slack and Azure DevOps, whose outage is no reason to restart.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/healthz' % os.environ.get('MLOPS_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["tini", "--"]
# SIGTERM (docker stop) lets the effect in flight finish: give it a grace period (compose: stop_grace_period).
CMD ["mlops-bot", "serve"]
