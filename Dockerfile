# syntax=docker/dockerfile:1
# One image for the API and the worker. TORCH_VARIANT=cuda (default) takes PyTorch's default
# Linux wheel, which bundles CUDA; TORCH_VARIANT=cpu takes the much smaller CPU-only wheel.
FROM python:3.11-slim

ARG TORCH_VARIANT=cuda
ARG TORCH_VERSION=2.13.0
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv/sngan

# torch first and pinned, so the project's range is already met and never swaps the build.
RUN case "$TORCH_VARIANT" in \
        cpu)  pip install "torch==${TORCH_VERSION}" --index-url "$TORCH_CPU_INDEX" ;; \
        cuda) pip install "torch==${TORCH_VERSION}" ;; \
        *)    echo "TORCH_VARIANT must be cpu or cuda" >&2; exit 1 ;; \
    esac

# Dependencies in their own layer: it is rebuilt only when pyproject.toml changes.
COPY pyproject.toml README.md ./
RUN mkdir -p app worker models \
    && touch app/__init__.py worker/__init__.py models/__init__.py \
    && pip install . \
    && pip uninstall --yes sngan-service \
    && rm -rf app worker models build

COPY app app
COPY worker worker
COPY models models
RUN pip install --no-deps . && rm -rf build

RUN useradd --create-home --uid 1000 sngan \
    && mkdir -p /data \
    && chown sngan:sngan /data
USER sngan

ENV SNGAN_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"

CMD ["sngan", "serve", "--host", "0.0.0.0", "--port", "8000"]
