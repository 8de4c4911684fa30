# Garden DX Ops Bot: `gardenbot serve` (Slack HTTP mode, Alertmanager webhook, /metrics, /healthz).
# Not built in CI here (no Docker engine): tests/deploy/test_container.py checks this file.
#
#   docker build --build-arg PG_MAJOR=16 -t garden-ops-bot .
#
# PG_MAJOR: pg_dump/pg_restore must be at least the Garden DX server's major version, so the
# client tools come from the PostgreSQL project's apt repository at the version chosen here.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG PG_MAJOR=15

# --- build: the bot and its dependencies (Ansible included) into a virtualenv ----------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/gardenbot
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY commands ./commands
COPY core ./core
COPY runbooks ./runbooks
COPY scheduler ./scheduler
COPY store ./store
RUN /opt/gardenbot/bin/pip install . \
    && /opt/gardenbot/bin/ansible-playbook --version >/dev/null

# --- pgdg-key: the PostgreSQL apt repository's signing key, as Debian's postgresql-common ships it ----
FROM debian:bookworm-slim AS pgdg-key
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-common \
    && cp /usr/share/postgresql-common/pgdg/apt.postgresql.org.gpg /pgdg.gpg

# --- runtime: slim, non-root ----------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG PG_MAJOR
LABEL org.opencontainers.image.title="garden-ops-bot" \
      org.opencontainers.image.description="ChatOps Slack bot for Garden DX operations"

COPY --from=pgdg-key /pgdg.gpg /usr/share/keyrings/pgdg.gpg
# postgresql-client-N: pg_dump, pg_restore, psql of that major version (GARDENBOT_PG_BIN_DIR below).
# openssh-client: the hosts playbooks reach the Garden DX servers over SSH (docs/hosts.md).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && echo "deb [signed-by=/usr/share/keyrings/pgdg.gpg] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" \
        > /etc/apt/sources.list.d/pgdg.list \
    && apt-get update \
    && apt-get install -y --no-install-recommends "postgresql-client-${PG_MAJOR}" openssh-client \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 gardenbot \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/gardenbot --shell /usr/sbin/nologin gardenbot \
    && mkdir -p /var/lib/gardenbot /var/backups/garden-dx /etc/gardenbot \
    && chown gardenbot:gardenbot /var/lib/gardenbot /var/backups/garden-dx

COPY --from=build /opt/gardenbot /opt/gardenbot

# ANSIBLE_HOME in /tmp: the root file system may be read-only (compose, Kubernetes); SSH keys and
# known_hosts are mounted at /home/gardenbot/.ssh (docs/operators-guide.md).
# In a container the server must listen beyond loopback (outside one it defaults to 127.0.0.1).
# GARDENBOT_AUDIT_KEY (32+ characters) and the Slack secrets come from the environment at run time:
# without the audit key the bot refuses to start.
ENV PATH=/opt/gardenbot/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GARDENBOT_HOST=0.0.0.0 \
    PORT=3000 \
    GARDENBOT_CONFIG=/etc/gardenbot/gardenbot.yml \
    GARDENBOT_STATE_DIR=/var/lib/gardenbot \
    GARDENBOT_BACKUP_DIR=/var/backups/garden-dx \
    GARDENBOT_PG_BIN_DIR=/usr/lib/postgresql/${PG_MAJOR}/bin \
    ANSIBLE_HOME=/tmp/ansible

USER 10001:10001
WORKDIR /home/gardenbot
VOLUME ["/var/lib/gardenbot", "/var/backups/garden-dx"]
EXPOSE 3000
# /healthz answers while the process serves; /readyz (store and Redis reachable) is for load balancers.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '3000') + '/healthz', timeout=3)"]
ENTRYPOINT ["gardenbot"]
CMD ["serve"]
