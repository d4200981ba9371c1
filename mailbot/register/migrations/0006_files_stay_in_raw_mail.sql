-- The files of a mail stay in its raw message (inbound.raw) and are decoded again when
-- read (mailbot/register/files.py); nothing is added to the file store any more. attachments.sha256
-- therefore no longer names a row of files. The files stored by version 5 stay there.
ALTER TABLE attachments DROP CONSTRAINT attachments_sha256_fkey;
