# One image, both entry points: `feedwatch watch` (the watcher pods, the
# default command) and `feedwatch operator`. Runs as the numeric user 10001 on a
# read-only root filesystem: it writes nothing outside /tmp (mount an emptyDir
# there). docs/image.md tells how it is built; `hack/image build` builds it
# here (Debian base, offline from a wheelhouse).
#
# Build arguments:
#   BASE_IMAGE       a Debian-like image with python3 (3.11) and its venv module
#   PIP_NO_INDEX, PIP_FIND_LINKS, PIP_INDEX_URL
#                    where pip finds packages (default: PyPI); e.g. PIP_NO_INDEX=1
#                    PIP_FIND_LINKS=/wheels with a wheelhouse mounted at /wheels
#   VERSION, REVISION  recorded in the OCI labels
ARG BASE_IMAGE=python:3.11-slim

# ---- build: the feedwatch wheel (the build backend pinned by the constraints)
FROM ${BASE_IMAGE} AS build
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ARG PIP_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CONSTRAINT=/src/requirements/constraints.txt \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements/constraints.txt requirements/
COPY pyproject.toml README.md ./
# The runtime dependencies, for the runtime stage's dependency layer.
RUN python3 -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' \
        > requirements/runtime.txt
COPY operator ./operator
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --no-deps --wheel-dir /dist .

# ---- runtime: the wheel and its pinned dependencies in a venv; no build tools
FROM ${BASE_IMAGE}
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ARG PIP_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    PATH=/opt/feedwatch/bin:$PATH
# The dependencies first, at their pinned versions: a layer that a change of
# feedwatch's own source leaves cached.
COPY requirements/constraints.txt /opt/feedwatch-dist/
COPY --from=build /src/requirements/runtime.txt /opt/feedwatch-dist/
RUN python3 -m venv /opt/feedwatch \
    && /opt/feedwatch/bin/pip install --constraint /opt/feedwatch-dist/constraints.txt \
        --requirement /opt/feedwatch-dist/runtime.txt \
    && useradd --uid 10001 --user-group --no-log-init --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin feedwatch
# Then the wheel. Bytecode is compiled at install, so a read-only root
# filesystem costs nothing at start.
COPY --from=build /dist/ /opt/feedwatch-dist/
RUN /opt/feedwatch/bin/pip install --constraint /opt/feedwatch-dist/constraints.txt \
        /opt/feedwatch-dist/feedwatch-*.whl \
    && /opt/feedwatch/bin/pip uninstall --yes pip setuptools \
    && rm -rf /opt/feedwatch-dist

WORKDIR /tmp
USER 10001:10001
# /healthz, /readyz and /metrics of `feedwatch watch` (FEEDWATCH_HEALTH_PORT).
EXPOSE 8080
# Labels last: a new revision must not invalidate the layers above.
ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="feedwatch" \
      org.opencontainers.image.description="A queue scheduling system on a relational database: watchers (feedwatch watch) and the Kubernetes operator (feedwatch operator)." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
ENTRYPOINT ["feedwatch"]
CMD ["watch"]
