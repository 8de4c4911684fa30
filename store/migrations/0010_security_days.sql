-- Each finished day's security counts, read once from the app's logs and kept, so a report sums
-- rows instead of reading days of logs again. One row per (day, zone, setup): a day is counted once
-- whichever replica or report kept it first (INSERT ... ON CONFLICT DO NOTHING), and a change of the
-- logs read or the thresholds (`setup`) starts new rows rather than mixing counts.

CREATE TABLE security_days (
    day                 date        NOT NULL,              -- a calendar day in `zone`
    zone                text        NOT NULL,              -- IANA name
    setup               text        NOT NULL,              -- the logs read and the thresholds
    failed_logins       integer     NOT NULL CHECK (failed_logins >= 0),
    burst_addresses     text[]      NOT NULL,              -- addresses with a failed-login burst
    request_bursts      integer     NOT NULL CHECK (request_bursts >= 0),  -- (address, minute) over the limit
    request_addresses   text[]      NOT NULL,              -- addresses with a request burst
    sources             jsonb       NOT NULL,              -- per log: path, device, inode, first line time, byte range
    kept_at             timestamptz NOT NULL,
    kept_by             text        NOT NULL,              -- 'nightly' or the report that needed it first
    PRIMARY KEY (day, zone, setup)
);
