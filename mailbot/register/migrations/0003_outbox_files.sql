-- Files that go out with a mail are stored once, in attachments: outbox.raw holds a
-- placeholder for each, replaced by the file's base64 text when the mail is sent.
-- (Rows queued by an older mailbot carry their files in raw and have no outbox_files.)
CREATE TABLE IF NOT EXISTS outbox_files (
    id             bigserial PRIMARY KEY,
    outbox_id      bigint NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    attachment_id  bigint NOT NULL REFERENCES attachments (id),
    placeholder    text NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_files_outbox_idx ON outbox_files (outbox_id);
