-- Incidents: what was declared, its timeline, and which escalation levels were paged.
-- Times come from the caller's clock (tests inject one), never from now() here.

CREATE TABLE incidents (
    id           bigserial PRIMARY KEY,
    severity     text        NOT NULL CHECK (severity IN ('P1', 'P2', 'P3', 'P4')),
    title        text        NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    impact       text,
    status       text        NOT NULL DEFAULT 'open'
                 CHECK (status IN ('open', 'acknowledged', 'resolved')),
    declared_by  text        NOT NULL,
    declared_at  timestamptz NOT NULL,
    acked_by     text,
    acked_at     timestamptz,
    resolved_by  text,
    resolved_at  timestamptz,
    summary      text,
    channel_ref  jsonb       NOT NULL DEFAULT '{}'::jsonb,   -- the inc-<n>-<slug> channel, if opened
    message_ref  jsonb       NOT NULL DEFAULT '{}'::jsonb,   -- the notice in the incidents channel
    postmortem   text                                       -- the Markdown draft made on resolve
);
CREATE INDEX incidents_unresolved ON incidents (declared_at) WHERE status <> 'resolved';

CREATE TABLE incident_timeline (
    id           bigserial PRIMARY KEY,
    incident_id  bigint      NOT NULL REFERENCES incidents (id),
    at           timestamptz NOT NULL,
    actor        text        NOT NULL,
    kind         text        NOT NULL,   -- declared, acknowledged, update, paged, action, resolved, ...
    text         text        NOT NULL DEFAULT '',
    detail       jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX incident_timeline_by_incident ON incident_timeline (incident_id, at, id);

-- One row per level paged: the primary key is what makes two replicas page a level once.
-- A claim not marked paged within its lease (the claimer died) may be claimed again.
CREATE TABLE incident_pages (
    incident_id  bigint      NOT NULL REFERENCES incidents (id),
    level        smallint    NOT NULL CHECK (level BETWEEN 1 AND 4),
    reason       text        NOT NULL CHECK (reason IN ('declared', 'unacknowledged', 'unresolved')),
    due_at       timestamptz NOT NULL,
    claimed_by   text        NOT NULL,
    claimed_at   timestamptz NOT NULL,
    attempts     integer     NOT NULL DEFAULT 1,
    paged_at     timestamptz,
    PRIMARY KEY (incident_id, level)
);
