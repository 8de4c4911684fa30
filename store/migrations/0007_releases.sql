-- Releases of Garden DX to its hosts (`release <version>`), and file archives taken on the hosts
-- (`backup files`, and before every release). One row per attempt, whatever its end.

CREATE TABLE releases (
    id               bigserial PRIMARY KEY,
    job_id           bigint REFERENCES jobs (id),
    version          text        NOT NULL,
    requested_by     text        NOT NULL,
    approved_by      text,
    status           text        NOT NULL DEFAULT 'running'
                     CHECK (status IN ('running', 'released', 'rolled_back', 'rollback_failed',
                                       'failed', 'interrupted')),
    previous_version text,
    current_version  text,
    migrations       text,       -- ran, started, skipped, not reached (the worst over the hosts)
    failed_step      text,
    error            text,
    backup_id        bigint REFERENCES backups (id),   -- the database backup taken first
    run_id           text,       -- the release playbook's run
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    duration_ms      integer
);
CREATE INDEX releases_recent ON releases (started_at DESC);

CREATE TABLE file_backups (
    id           bigserial PRIMARY KEY,
    job_id       bigint REFERENCES jobs (id),
    release_id   bigint REFERENCES releases (id),
    host         text        NOT NULL,
    path         text        NOT NULL,   -- on the host: the archive stays there
    size_bytes   bigint      NOT NULL,
    sha256       text        NOT NULL,
    created_by   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX file_backups_recent ON file_backups (created_at DESC);
