# syntax=docker/dockerfile:1
# authsvc image: the package and its runtime dependencies (pinned by constraints.txt) in a
# venv, run as a numeric unprivileged user under tini. Build: docker build -t authsvc .
#
# The base is pinned by digest: the tag says what it is, the digest is what gets pulled. This
# digest is python:3.11.10-slim-bookworm's as a public repository's Renovate-maintained pin file
# records it (our build machines reach no registry to resolve one); a dependency bot (Renovate,
# Dependabot) should keep tag and digest current. docs/operations.md, "The image".
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, in their own layer, so a code change does not reinstall them.
# Only [project] dependencies: neither the [dev] extra nor the embedded PostgreSQL
# ([embedded]) goes into the image.
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
# tini is PID 1: it forwards SIGTERM to `serve` from the first instant (PID 1 has no default
# signal actions, so a signal before Python installs its handlers would be lost) and reaps
# any orphan reparented to it, which the supervisor, reaping only its own workers, would not.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
# A fixed numeric uid and gid: Kubernetes can only check runAsNonRoot against a number, and
# deploy/kubernetes runs as the same one.
RUN groupadd --system --gid 10001 authsvc \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/authsvc \
        --shell /usr/sbin/nologin authsvc
COPY --from=builder /opt/venv /opt/venv
# AUTHSVC_EMBEDDED_DATABASE=false: without AUTHSVC_DATABASE_URL every command refuses to
# start (the embedded database is not installed here, and would die with the container).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AUTHSVC_HOST=0.0.0.0 \
    AUTHSVC_PORT=50051 \
    AUTHSVC_EMBEDDED_DATABASE=false
USER 10001:10001
WORKDIR /home/authsvc
EXPOSE 50051
# Liveness, not readiness: what acts on Docker's health status (Swarm, autoheal) replaces
# unhealthy containers, and a database outage must not replace every one. Readiness (no
# --service) is the probe for routing; Kubernetes ignores HEALTHCHECK and uses its own probes.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["authsvc", "healthcheck", "--service", "authsvc.liveness"]
# `serve` supervises one server process per CPU on the one port (AUTHSVC_WORKERS; under a
# CPU limit set it to the limit, as os.cpu_count() sees the host's CPUs). SIGTERM to it is
# passed on to every worker; if a worker dies it stops the rest and exits non-zero, for the
# orchestrator to restart the container.
ENTRYPOINT ["/usr/bin/tini", "--", "authsvc"]
CMD ["serve"]
