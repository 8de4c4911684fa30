-- File archives (`backup files`) get their own retention (backup.files_retention_days): an archive
-- past it is deleted on its host and its row marked `pruned`, as database backups are. Rows written
-- before this were good when written.
ALTER TABLE file_backups
    ADD COLUMN status    text NOT NULL DEFAULT 'good' CHECK (status IN ('good', 'pruned')),
    ADD COLUMN pruned_at timestamptz;
CREATE INDEX file_backups_good ON file_backups (host, created_at DESC) WHERE status = 'good';
