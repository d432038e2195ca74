#
# The vuegraf image. Build:   docker build --build-arg VERSION=<version> -t vuegraf .
# Run (config in ./conf):     docker run -d -v "$PWD/conf:/opt/vuegraf/conf:ro" vuegraf
# Builds with Docker 20.10 and newer, with the classic builder or BuildKit: no parser
# directive, no RUN --mount, nothing a builder must fetch besides the base image.
# More, and the Compose setup with InfluxDB 2 and dashboards: docs/docker.md.
#
# Stage "build" installs vuegraf and every dependency into the virtual environment /opt/venv
# and removes pip and setuptools from it. The final stage copies only that directory: no
# compiler, no build tools, no source tree, no pip cache and no wheel files end up in a layer
# of the image.
#
# BASE_IMAGE is any Debian 12 (bookworm) based image with `python3` 3.11+ and its venv module:
# python:3.11-slim-bookworm (the default), or debian:bookworm-slim with the Debian packages
# python3 and python3-venv installed. Both stages use it: the venv's python is a link to the
# base image's python3.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# setup.py reads the version from src/vuegraf/__init__.py and README.md as long description.
COPY setup.py pyproject.toml README.md LICENSE ./
COPY src ./src
# PyPI has binary wheels of every dependency for linux/amd64 and linux/arm64, so nothing is
# compiled from C. pip writes the modules' bytecode here, as the vuegraf user cannot write into
# /opt/venv at run time. Then setuptools and, last, pip itself leave the venv: vuegraf needs
# neither to run.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/python3 -m pip install --no-cache-dir . \
 && /opt/venv/bin/python3 -m pip uninstall --yes setuptools \
 && /opt/venv/bin/python3 -m pip uninstall --yes pip \
 && /opt/venv/bin/vuegraf --version


FROM ${BASE_IMAGE}

ARG BASE_IMAGE
ARG VERSION=unknown
LABEL org.opencontainers.image.title="vuegraf" \
      org.opencontainers.image.description="Emporia Vue energy usage into InfluxDB 1.x/2.x, SQLite and MQTT" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

# PATH is spelled out, not extended from the base image's: an image made with `docker import`
# has no PATH of its own. /opt/venv/bin first puts `vuegraf` and `vuegraf-health` on it.
# VUEGRAF_STATE_DIR is where vuegraf keeps its state (health.json, queues) unless the config
# key "stateDir" says otherwise; vuegraf-health reads health.json from here.
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VUEGRAF_STATE_DIR=/opt/vuegraf/state

# python:3.11-slim-bookworm brings pip, setuptools and wheel into the base python3, which
# vuegraf (in its own venv) never uses: they leave the image. A Debian base with only
# python3 and python3-venv has none of them.
RUN groupadd --gid 1012 vuegraf \
 && useradd --uid 1012 --gid 1012 --no-create-home --home-dir /opt/vuegraf \
        --shell /usr/sbin/nologin vuegraf \
 && mkdir -p /opt/vuegraf/conf /opt/vuegraf/state \
 && chown vuegraf:vuegraf /opt/vuegraf/state \
 && if python3 -m pip --version >/dev/null 2>&1; then \
        python3 -m pip uninstall --yes --no-cache-dir wheel setuptools pip; \
    fi

# Only the virtual environment of the build stage, owned by root: vuegraf cannot change it.
COPY --from=build /opt/venv /opt/venv

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
