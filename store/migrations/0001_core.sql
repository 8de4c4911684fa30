-- The bot's own store: audit log, approvals, jobs, backup catalog.

CREATE TABLE audit_log (
    id             bigserial PRIMARY KEY,
    record_id      uuid        NOT NULL UNIQUE,      -- written by the producer; makes spool replays idempotent
    at             timestamptz NOT NULL,
    correlation_id text        NOT NULL,
    source         text        NOT NULL,             -- slack, console, scheduler, webhook
    actor          text        NOT NULL,
    approver       text,
    channel        text,
    command        text        NOT NULL,
    args           jsonb       NOT NULL DEFAULT '{}'::jsonb,  -- secrets masked before they get here
    event          text        NOT NULL,             -- requested, refused, approval_opened, approved, ...
    outcome        text        NOT NULL,
    duration_ms    integer,
    detail         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    prev_hash      text        NOT NULL,
    hash           text        NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_actor ON audit_log (actor, at);

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();

CREATE TABLE approvals (
    id           bigserial PRIMARY KEY,
    command      text        NOT NULL,
    args         jsonb       NOT NULL,          -- the parsed arguments the action will run with
    summary      text        NOT NULL,          -- what will happen, shown to the approver
    binding      jsonb       NOT NULL DEFAULT '{}'::jsonb,  -- facts the action must still match (e.g. checksum)
    requester    text        NOT NULL,
    channel      text,
    source       text        NOT NULL,
    correlation_id text      NOT NULL,
    status       text        NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'approved', 'denied', 'expired')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    decided_by   text,
    decided_at   timestamptz,
    job_id       bigint,
    message_ref  jsonb       NOT NULL DEFAULT '{}'::jsonb   -- where the approval message was posted
);
CREATE INDEX approvals_pending ON approvals (expires_at) WHERE status = 'pending';

CREATE TABLE jobs (
    id            bigserial PRIMARY KEY,
    command       text        NOT NULL,
    args          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    requested_by  text        NOT NULL,
    approved_by   text,
    approval_id   bigint REFERENCES approvals (id),
    channel       text,
    source        text        NOT NULL,
    correlation_id text       NOT NULL,
    status        text        NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'interrupted')),
    progress      smallint    NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    progress_text text        NOT NULL DEFAULT '',
    result        jsonb,
    error         text,
    owner_host    text,
    owner_pid     integer,
    owner_instance text,
    heartbeat_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    message_ref   jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX jobs_recent ON jobs (created_at DESC);
CREATE INDEX jobs_active ON jobs (status) WHERE status IN ('queued', 'running');

CREATE TABLE backups (
    id              bigserial PRIMARY KEY,
    job_id          bigint REFERENCES jobs (id),
    kind            text        NOT NULL DEFAULT 'regular' CHECK (kind IN ('regular', 'safety')),
    database_name   text        NOT NULL,
    file_name       text        NOT NULL UNIQUE,
    status          text        NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'good', 'failed', 'interrupted', 'pruned')),
    size_bytes      bigint,
    sha256          text,
    row_counts      jsonb,
    pg_dump_version text,
    server_version  text,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    duration_ms     integer,
    verified_at     timestamptz,
    verify_status   text CHECK (verify_status IN ('passed', 'failed')),
    verify_detail   jsonb,
    error           text,
    created_by      text        NOT NULL
);
CREATE INDEX backups_good ON backups (finished_at DESC) WHERE status = 'good';
