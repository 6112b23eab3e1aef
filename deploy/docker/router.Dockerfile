# Triage's router alone, the sidecar: no torch, no transformers, nothing of the engine.
# Build from the repository root (docs/deploy.md):
#   docker build -f deploy/docker/router.Dockerfile -t triage-router:0.1.0 .
# Python 3.11: the version requirements.lock was resolved with.

FROM python:3.11.14-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src

COPY requirements.lock pyproject.toml README.md ./
# pip as `make install` pins it, and the lock's setuptools: the package is built without build
# isolation below, so that its build backend is the locked one too.
RUN pip install pip==26.3 \
    && pip install -c requirements.lock setuptools

COPY router router
COPY policies policies
COPY engine_server engine_server
COPY kernels kernels
# The lock as constraints: only what the router depends on is installed, each at its locked
# version, with tracing (otel) and the shared rate limits (redis). The engine extra (torch,
# transformers) is not asked for, so none of it comes.
RUN pip install --no-build-isolation -c requirements.lock '.[otel,redis]'


FROM python:3.11.14-slim-bookworm

RUN useradd --uid 10001 --user-group --create-home triage
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TRIAGE_CONFIG=/etc/triage/config.toml

# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 8080
# /health answers while the process does; python's urllib, as the image has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]
# No config is baked in: mount one at $TRIAGE_CONFIG. Listening on every address is what a
# container needs, whatever [server] host says; the port is fixed to match EXPOSE and HEALTHCHECK.
CMD ["triage", "serve", "--host", "0.0.0.0", "--port", "8080"]
