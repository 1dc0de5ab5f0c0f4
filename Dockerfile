# EmoLens server image: the core install (plus chosen extras) in a slim Python base, run as a
# non-root user, with its data in a volume. Build and run:
#   docker build -t emolens .                       # core + PostgreSQL driver
#   docker build -t emolens --build-arg EXTRAS=postgres,identity .
#   docker run -p 8000:8000 -v emolens-data:/data emolens
# or `docker compose up` for EmoLens with PostgreSQL (compose.yaml).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: a virtual environment with EmoLens and its dependencies, nothing else
FROM ${PYTHON_IMAGE} AS build
ARG EXTRAS=postgres
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/emolens
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/emolens/bin/pip install ".[${EXTRAS}]"

# -- run: the environment, the system libraries OpenCV needs, and a user without privileges
FROM ${PYTHON_IMAGE}
# Debian's security updates should reach the image at each rebuild, so these are not version-pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin emolens \
    && mkdir -p /data && chown emolens /data
COPY --from=build /opt/emolens /opt/emolens
COPY docker/entrypoint.sh /usr/local/bin/emolens-entrypoint
ENV PATH=/opt/emolens/bin:$PATH \
    EMOLENS_HOME=/data \
    EMOLENS_WORKERS=2 \
    PORT=8000 \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["emolens-entrypoint", "healthcheck"]
ENTRYPOINT ["emolens-entrypoint"]
CMD ["serve"]
