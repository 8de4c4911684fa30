#!/usr/bin/env bash
# The test command: installs what the tests need into .venv, starts PostgreSQL and Redis if they
# do not answer, then runs ruff (lint + format), mypy (strict) and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"

# PostgreSQL client tools (pg_dump, pg_restore, psql, pgbench) for the backup tests.
if ! command -v pg_dump >/dev/null 2>&1 || ! command -v pgbench >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq postgresql-client postgresql-contrib) >/dev/null 2>&1 || true
fi

# promtool and amtool for the monitoring configuration tests (tests/deploy/), from Debian's packages;
# with no init system (or a policy-rc.d that says 101) their services are not started.
if ! command -v promtool >/dev/null 2>&1 || ! command -v amtool >/dev/null 2>&1; then
  echo "installing prometheus and prometheus-alertmanager (promtool, amtool)"
  (apt-get update -qq && apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 \
    prometheus prometheus-alertmanager) >/dev/null 2>&1 || echo "could not install promtool/amtool"
fi
# nginx, systemd-analyze and openssl for the host deployment files' tests (tests/deploy/test_host_files.py).
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ] \
    || ! command -v systemd-analyze >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 \
    nginx systemd openssl) >/dev/null 2>&1 || echo "could not install nginx/systemd/openssl"
fi
# git for the hosts tests' sample Garden DX (Ansible, ansible-runner and supervisor come with .[dev]).
command -v git >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq git) >/dev/null 2>&1 || true

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
fi

echo "== ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo "== mypy"
"$VENV/bin/mypy"
echo "== pytest"
"$VENV/bin/python" -m pytest "$@"
