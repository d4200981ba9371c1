-- Issue 20 (speed): where a file's encoded body lies in its raw mail, so that sending it reads
-- that slice instead of parsing the whole mail again (mailbot/files.py). Files stored before
-- have none: they are read by parsing their mail, as before.
ALTER TABLE attachments ADD COLUMN part_start bigint, ADD COLUMN part_end bigint,
    ADD COLUMN part_encoding text;
