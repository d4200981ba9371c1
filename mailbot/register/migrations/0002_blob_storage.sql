-- Mail, attachments and outgoing mail are mostly base64 or already compressed (zip, pdf,
-- png): PostgreSQL's pglz compression spends CPU on them for nothing. Store them out of
-- line, uncompressed. (Affects new rows; existing rows keep their storage.)
ALTER TABLE inbound ALTER COLUMN raw SET STORAGE EXTERNAL;
ALTER TABLE attachments ALTER COLUMN data SET STORAGE EXTERNAL;
ALTER TABLE outbox ALTER COLUMN raw SET STORAGE EXTERNAL;
