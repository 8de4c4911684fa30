-- Job locks recorded beside Redis. A job runs only while it holds both its Redis lock and this row;
-- a Redis that restarts empty (or evicts the key) cannot then let a second backup start beside it.

CREATE TABLE job_locks (
    name        text        PRIMARY KEY,
    token       text        NOT NULL,              -- the same token as the Redis lock
    holder      jsonb       NOT NULL DEFAULT '{}'::jsonb,  -- job_id, requested_by, started_at
    taken_at    timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL               -- renewed by the holder's heartbeat
);

-- Which lock a running job holds: start-up recovery asks that lock, not the job's pid, whether it lives.
ALTER TABLE jobs ADD COLUMN lock_name text;
