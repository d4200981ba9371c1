-- The file store: every decoded file once, by the SHA-256 of its bytes. attachments keep
-- the name, type and size of each file in a message and refer to its bytes by sha256.
CREATE TABLE files (
    sha256     text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size       integer NOT NULL,
    data       bytea NOT NULL,
    stored_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE files ALTER COLUMN data SET STORAGE EXTERNAL;

INSERT INTO files (sha256, size, data)
SELECT DISTINCT ON (sha256) sha256, size, data FROM attachments ORDER BY sha256, id;

ALTER TABLE attachments DROP COLUMN data;
ALTER TABLE attachments ADD FOREIGN KEY (sha256) REFERENCES files (sha256);
CREATE INDEX attachments_sha256_idx ON attachments (sha256);
