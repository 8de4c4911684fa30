-- Scheduled runs and probe history.
-- Every replica schedules every job; a fire is claimed by inserting its (schedule, fire time) row,
-- and the one insert that lands runs it. The row then carries the run's status and result.
CREATE TABLE schedule_runs (
    id           bigserial PRIMARY KEY,
    schedule     text        NOT NULL,
    fire_time    timestamptz NOT NULL,
    trigger      text        NOT NULL DEFAULT 'cron' CHECK (trigger IN ('cron', 'catch_up', 'manual')),
    status       text        NOT NULL DEFAULT 'running'
                 CHECK (status IN ('running', 'succeeded', 'failed', 'missed')),
    claimed_by   text        NOT NULL,          -- host:pid:instance of the replica that won the claim
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    result       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    error        text,
    UNIQUE (schedule, fire_time)
);
CREATE INDEX schedule_runs_latest ON schedule_runs (schedule, fire_time DESC);

-- One row per probe of one path under the target API (every minute, per `probes`).
CREATE TABLE probe_results (
    id           bigserial PRIMARY KEY,
    path         text        NOT NULL,
    probed_at    timestamptz NOT NULL,
    status_code  integer,                       -- NULL: no HTTP answer at all
    healthy      boolean     NOT NULL,
    latency_ms   double precision,              -- NULL: no HTTP answer at all
    error        text
);
CREATE INDEX probe_results_at ON probe_results (probed_at);
