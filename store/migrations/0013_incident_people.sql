-- Who stood behind an incident's declaration and acknowledgement besides the Slack user: an admin
-- acting as that user at a console, and the console's OS login. A P1 waives a restart's approval only
-- when someone other than the requester declared or acknowledged it, so these must name the people,
-- not only the Slack ID acted as. NULL from Slack, the scheduler and the demo, and for older rows.
ALTER TABLE incidents
    ADD COLUMN declared_impersonated_by text,
    ADD COLUMN declared_from_os_login   text,
    ADD COLUMN acked_impersonated_by    text,
    ADD COLUMN acked_from_os_login      text;
