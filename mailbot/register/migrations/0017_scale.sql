-- Issue 20 (several daemons on one database): what ties a stored mail to other mail, read from
-- its headers at storing time (its sender, its own and referenced Message-IDs, the request
-- numbers of its subject). Pending mail that shares a key is processed in order, by one daemon
-- at a time (mailbot/transport/claims.py). Mail stored before has no keys: nothing ties it.
ALTER TABLE inbound ADD COLUMN thread_keys text[] NOT NULL DEFAULT '{}';
