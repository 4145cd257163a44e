# syntax=docker/dockerfile:1
# authsvc image: the package and its runtime dependencies (pinned by constraints.txt) in a
# venv, run as an unprivileged user. Build: docker build -t authsvc .
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, in their own layer, so a code change does not reinstall them.
# Only [project] dependencies: the [dev] extra stays out of the image.
COPY pyproject.toml constraints.txt ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        >/tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt

# pyproject names README.md as the readme; the wildcard lets the build work before it exists
# (a COPY whose only source matches nothing would fail, hence pyproject.toml beside it).
COPY pyproject.toml README.md* ./
COPY authsvc ./authsvc
RUN pip install -c constraints.txt .

FROM ${PYTHON_IMAGE}
# Unprivileged: the service needs no root, and PostgreSQL (embedded) will not run as root.
RUN useradd --system --create-home --home-dir /home/authsvc --shell /usr/sbin/nologin authsvc
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AUTHSVC_HOST=0.0.0.0 \
    AUTHSVC_PORT=50051
USER authsvc
# Writable by authsvc: relative paths such as the embedded database's .authsvc-data/ land here.
WORKDIR /home/authsvc
EXPOSE 50051
# The gRPC health service, queried by the CLI: SERVING only once the database is migrated.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["authsvc", "healthcheck"]
# `serve` supervises one server process per CPU on the one port (AUTHSVC_WORKERS; under a
# CPU limit set it to the limit, as os.cpu_count() sees the host's CPUs). SIGTERM to it is
# passed on to every worker; if a worker dies it stops the rest and exits non-zero, for the
# orchestrator to restart the container.
ENTRYPOINT ["authsvc"]
CMD ["serve"]
