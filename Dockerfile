# brushfire: one image for the inference worker and the Discord bot (`python run.py worker|bot|...`).
#
#   docker build -t brushfire .                                   # CUDA build of torch (GPU boxes)
#   docker build -t brushfire:cpu --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
#
# The bundled tiny model ships inside the image (inference/tiny/model), so a worker with no model configured
# starts with no download. Real models are cached under /models (a volume), the database under /data.
FROM python:3.11-slim-bookworm

# On Linux x86_64, the torch wheel from the default package index is the CUDA build (multi-GB; it runs on CPU
# too). Point TORCH_INDEX_URL at a CPU-only index for a small image without CUDA.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/models \
    BRUSHFIRE_DATABASE__PATH=/data/brushfire.sqlite3 \
    BRUSHFIRE_DISCORD__SYNC_STATE_FILE=/data/command-sync.sha256

RUN useradd --create-home --uid 10001 --user-group brushfire \
    && mkdir -p /app /data /models \
    && chown brushfire:brushfire /data /models

WORKDIR /app

# torch first and on its own layer: it is by far the largest and changes least.
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install "torch==${TORCH_VERSION}" --index-url "$TORCH_INDEX_URL"; \
    else \
        pip install "torch==${TORCH_VERSION}"; \
    fi

COPY pyproject.toml README.md run.py ./
COPY bot ./bot
COPY cogs ./cogs
COPY inference ./inference
COPY storage ./storage
COPY docker/entrypoint.sh /usr/local/bin/brushfire-entrypoint
# spandrel (upscales) without torchvision, which would not match a CPU-only torch: see pyproject.toml.
RUN pip install . && pip install --no-deps "spandrel>=0.4.2" "einops>=0.7" \
    && chmod 0755 /usr/local/bin/brushfire-entrypoint

USER brushfire
VOLUME ["/data", "/models"]
EXPOSE 8765

# The worker's liveness route; the bot's container overrides this (compose.yaml) since it serves no HTTP.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('BRUSHFIRE_WORKER__PORT', '8765') + '/healthz', timeout=4)"]

ENTRYPOINT ["brushfire-entrypoint"]
CMD ["all"]
