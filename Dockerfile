# Garden DX Ops Bot: `gardenbot serve` behind Slack. Not built in CI (no Docker engine there).
FROM python:3.11-slim-bookworm

# openssh-client: the hosts playbooks reach the Garden DX servers over SSH (docs/hosts.md).
# pg_dump / pg_restore must be at least the target server's major version (bookworm ships 15).
# For a newer server, install that version's client and point GARDENBOT_PG_BIN_DIR at it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client openssh-client \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 gardenbot \
    && mkdir -p /var/lib/gardenbot /var/backups/garden-dx \
    && chown gardenbot /var/lib/gardenbot /var/backups/garden-dx

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY commands ./commands
COPY core ./core
COPY runbooks ./runbooks
COPY scheduler ./scheduler
COPY store ./store
RUN pip install --no-cache-dir .

USER gardenbot
# In a container the server must listen beyond loopback (outside one it defaults to 127.0.0.1).
ENV GARDENBOT_HOST=0.0.0.0 \
    GARDENBOT_STATE_DIR=/var/lib/gardenbot \
    GARDENBOT_BACKUP_DIR=/var/backups/garden-dx \
    GARDENBOT_PG_BIN_DIR=/usr/lib/postgresql/15/bin
VOLUME ["/var/lib/gardenbot", "/var/backups/garden-dx"]
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=3s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:3000/healthz', timeout=2).status != 200)"
ENTRYPOINT ["gardenbot"]
CMD ["serve", "--port", "3000"]
