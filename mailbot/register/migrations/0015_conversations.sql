-- Issue 16 (conversations a support team can trust): a request opened for a new question in a
-- confirming reply names the request it follows; a file keeps the name its mail gave it (the
-- safe name is `filename`); an undeliverable address says what made it one (our SMTP server's
-- refusal, or a bounce).
ALTER TABLE requests ADD COLUMN follows_id bigint REFERENCES requests (id) ON DELETE SET NULL;
ALTER TABLE attachments ADD COLUMN original_filename text;
ALTER TABLE undeliverable_addresses
    ADD COLUMN source text NOT NULL DEFAULT 'smtp' CHECK (source IN ('smtp', 'dsn'));
