# The swarm-redis image used by docker-compose.yml: the package, its CLI and the metrics
# exporter (extra "prometheus"), nothing else.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY lua ./lua
COPY swarm_redis ./swarm_redis
RUN pip install '.[fast,embedded,prometheus]' && useradd --create-home --uid 10001 swarm

USER swarm
CMD ["swarm-redis", "--help"]
