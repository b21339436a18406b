# AI Stack API image: `docker build -t aistack .`
# Stage 1 installs the locked environment with uv; stage 2 is the runtime, as a
# non-root user, without uv, compilers or the build cache.
FROM python:3.11-slim-bookworm AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.8 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# dependencies first (cached while only the code changes), exactly as locked
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY src ./src
RUN uv sync --frozen --no-dev --no-editable

FROM python:3.11-slim-bookworm AS runtime
# libgomp: OpenMP runtime of xgboost, lightgbm and implicit
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home aistack \
    && mkdir -p /data && chown aistack:aistack /data
COPY --from=build --chown=aistack:aistack /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    AISTACK_WORKSPACE=/data \
    AISTACK_HOST=0.0.0.0 \
    AISTACK_PORT=8000
USER 10001:10001
WORKDIR /data
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('AISTACK_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["aistack"]
CMD ["serve", "fraud"]
