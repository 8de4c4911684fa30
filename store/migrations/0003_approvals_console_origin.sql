-- Which console asked for an approval: a decision from the same OS login is refused,
-- whichever Slack user that login acts as. NULL for Slack, the scheduler and the demo.
-- An admin who asked while acting as someone else is named too: they may not decide it either.

ALTER TABLE approvals
    ADD COLUMN requester_os_login text,
    ADD COLUMN requester_host     text,
    ADD COLUMN requester_impersonated_by text;
