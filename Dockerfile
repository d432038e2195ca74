# syntax=docker/dockerfile:1
#
# The vuegraf image. Build:   docker build --build-arg VERSION=<version> -t vuegraf .
# Run (config in ./conf):     docker run -d -v "$PWD/conf:/opt/vuegraf/conf:ro" vuegraf
# Needs BuildKit (the default builder since Docker 23) for RUN --mount.
# More, and the Compose setup with InfluxDB 2 and dashboards: docs/docker.md.
#
# Stage "build" turns vuegraf and every dependency into wheels. The final stage installs only
# those wheels from a bind mount: no compiler, no build tools, no source tree, no pip cache and
# no wheel files end up in a layer of the image.

FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# setup.py reads the version from src/vuegraf/__init__.py and README.md as long description.
COPY setup.py pyproject.toml README.md LICENSE ./
COPY src ./src
# vuegraf's own wheel first, then the wheels of everything it depends on (PyPI has binary
# wheels of all of them for linux/amd64 and linux/arm64, so nothing is compiled there).
RUN pip wheel --no-deps -w /wheels . \
 && pip wheel -w /wheels /wheels/vuegraf-*.whl


FROM python:3.11-slim-bookworm

ARG VERSION=unknown
LABEL org.opencontainers.image.title="vuegraf" \
      org.opencontainers.image.description="Emporia Vue energy usage into InfluxDB 1.x/2.x, SQLite and MQTT" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"

# VUEGRAF_STATE_DIR is where vuegraf keeps its state (health.json, queues) unless the config
# key "stateDir" says otherwise; vuegraf-health reads health.json from here.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VUEGRAF_STATE_DIR=/opt/vuegraf/state

RUN groupadd --gid 1012 vuegraf \
 && useradd --uid 1012 --gid 1012 --no-create-home --home-dir /opt/vuegraf \
        --shell /usr/sbin/nologin vuegraf \
 && mkdir -p /opt/vuegraf/conf /opt/vuegraf/state \
 && chown vuegraf:vuegraf /opt/vuegraf/state

# Only the wheels from the build stage; setuptools and wheel (build tools vuegraf does not use
# at run time) are removed from the base image's Python as well.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels vuegraf \
 && pip uninstall --yes setuptools wheel

WORKDIR /opt/vuegraf
USER 1012:1012
VOLUME ["/opt/vuegraf/conf", "/opt/vuegraf/state"]

# vuegraf stops cleanly on SIGTERM: it finishes the write in progress and flushes its buffer.
STOPSIGNAL SIGTERM
# vuegraf-health exits 0 while $VUEGRAF_STATE_DIR/health.json says healthy, 1 otherwise. The long
# start period leaves room for a start-up backfill or --historydays import.
HEALTHCHECK --interval=60s --timeout=10s --start-period=10m --retries=3 CMD ["vuegraf-health"]

ENTRYPOINT ["vuegraf"]
CMD ["/opt/vuegraf/conf/vuegraf.json"]
