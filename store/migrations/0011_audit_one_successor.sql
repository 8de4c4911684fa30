-- Every audit row has at most one successor: two processes that both chain a record onto the same
-- head cannot both insert it, so the chain stays one line without a lock held across round trips
-- (store/audit.py). A log already forked (damaged before this) keeps its old rows as they are
-- (verify names the fork) and the rule holds from here on.
DO $$
BEGIN
    CREATE UNIQUE INDEX audit_log_one_successor ON audit_log (prev_hash);
EXCEPTION WHEN unique_violation THEN
    RAISE WARNING 'audit_log already has two rows linked to one hash: the one-successor rule starts after id %',
        (SELECT max(id) FROM audit_log);
    EXECUTE format(
        'CREATE UNIQUE INDEX audit_log_one_successor ON audit_log (prev_hash) WHERE id > %s',
        (SELECT max(id) FROM audit_log)
    );
END
$$;
