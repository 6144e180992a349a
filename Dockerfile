# One image, both entry points: `feedwatch watch` (the watcher pods) and, later,
# `feedwatch operator`. Built by CI elsewhere; here it is linted (hadolint) and
# its steps are exercised by tests/unit/test_dockerfile.py.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir . \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin feedwatch

WORKDIR /
USER 10001
EXPOSE 8080
ENTRYPOINT ["feedwatch"]
CMD ["watch"]
