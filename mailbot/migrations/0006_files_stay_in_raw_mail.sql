-- The files of a mail stay in its raw message (inbound.raw) and are decoded again when
-- read; the file store keeps only the files that came with no raw mail. attachments.sha256
-- therefore no longer always names a row of files. The files already stored stay there.
ALTER TABLE attachments DROP CONSTRAINT attachments_sha256_fkey;
