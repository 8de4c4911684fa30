-- One Slack message per Alertmanager alert group (groupKey): where it is, the group's latest state,
-- and who acknowledged it. Shared by every replica, so a repeat or a resolution updates the same
-- message whichever replica receives it, and a restart keeps the thread.

CREATE TABLE alert_threads (
    id             bigserial PRIMARY KEY,               -- the short id buttons and `alert ack` use
    group_key      text        NOT NULL UNIQUE,
    status         text        NOT NULL CHECK (status IN ('firing', 'resolved')),
    payload        jsonb       NOT NULL,                -- the latest webhook payload of the group
    notifications  integer     NOT NULL DEFAULT 1,      -- webhooks received for the group
    first_at       timestamptz NOT NULL,
    received_at    timestamptz NOT NULL,
    channel        text,
    ts             text,                                -- the message; NULL until it is posted
    posting_until  timestamptz,                         -- a replica posting it holds this lease
    acked_by       text,
    acked_at       timestamptz
);
