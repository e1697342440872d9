# syntax=docker/dockerfile:1
# Build: docker build -t pgconn-bot .      Run: docker run --env-file .env -p 3000:3000 pgconn-bot
# In .env, PGCONN_DATABASE_URL and PGCONN_STATE_URL must name a host the container can reach over
# TCP: inside it 127.0.0.1 / localhost is the container itself, and there is no Unix socket
# (.env.example says more). `docker compose up --build` runs it beside a PostgreSQL (compose.yaml).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
# The same install as the README, without the dev extras; .ci/run builds and installs exactly this
# (a wheel of the project into a fresh virtualenv) on every run, since CI has no Docker engine.
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PORT=3000
RUN useradd --system --uid 10001 --no-create-home pgconn
COPY --from=build /opt/venv /opt/venv
USER pgconn
EXPOSE ${PORT}
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\",\"3000\")}/healthz', timeout=4)"
# Socket Mode instead: docker run … pgconn-bot socket
CMD ["pgconn-bot", "serve"]
