-- The supervisors' board (issue 19): one-time login links, sessions, the log-in rate limits,
-- and the indexes of its register pages (sorted by deadline, keyset-paginated).

-- A login link mailed to a staff address: the token is kept only as its SHA-256; it works
-- once (used_at), until expires_at.
CREATE TABLE web_login_links (
    id          bigserial PRIMARY KEY,
    staff_id    bigint NOT NULL REFERENCES staff (id) ON DELETE CASCADE,
    token_hash  text NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);

-- Every request for a link, registered address or not: the limits per address and per client.
CREATE TABLE web_login_attempts (
    id       bigserial PRIMARY KEY,
    address  text NOT NULL,
    client   text NOT NULL,
    at       timestamptz NOT NULL
);
CREATE INDEX web_login_attempts_address_idx ON web_login_attempts (address, at);
CREATE INDEX web_login_attempts_client_idx ON web_login_attempts (client, at);

-- A browser's session after a log-in: the cookie's token kept only as its SHA-256.
CREATE TABLE web_sessions (
    id          bigserial PRIMARY KEY,
    staff_id    bigint NOT NULL REFERENCES staff (id) ON DELETE CASCADE,
    token_hash  text NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    client      text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    ended_at    timestamptz                         -- logout
);

-- The register sorted by deadline (requests without one last): all of it, the open or the
-- finished ones (closed, rejected), one status, or an assignee's or an organisation's open or
-- finished ones. Queries write the open ones as `(status IN ('closed', 'rejected')) IS FALSE`,
-- the very expression indexed (PostgreSQL turns `NOT …` and `= false` into `<> ALL`, which no
-- index column matches). ОП4 requests by their parent (the ТП2 view and the links), the requests
-- of an incident (the known-error pages).
CREATE INDEX requests_deadline_idx ON requests ((coalesce(due_at, 'infinity'::timestamptz)), id);
CREATE INDEX requests_done_deadline_idx ON requests ((status IN ('closed', 'rejected')),
    (coalesce(due_at, 'infinity'::timestamptz)), id);
CREATE INDEX requests_status_deadline_idx
    ON requests (status, (coalesce(due_at, 'infinity'::timestamptz)), id);
CREATE INDEX requests_assignee_deadline_idx ON requests (assignee_id,
    (status IN ('closed', 'rejected')), (coalesce(due_at, 'infinity'::timestamptz)), id);
CREATE INDEX requests_organization_deadline_idx ON requests (organization_id,
    (status IN ('closed', 'rejected')), (coalesce(due_at, 'infinity'::timestamptz)), id);
-- ОП4 requests by parent and requests by incident: requests_parent_idx, requests_incident_idx (0012)
-- requests waiting for their first reaction: the SLA board, overdue marks, the metrics
CREATE INDEX requests_awaiting_reaction_idx ON requests (due_at)
    WHERE first_reaction_at IS NULL AND (status IN ('closed', 'rejected')) IS FALSE;
-- the register's text filter: number, subject, requester (substring, any case)
CREATE INDEX requests_text_trgm_idx ON requests USING gin (
    (number || ' ' || subject || ' ' || requester_email || ' ' || requester_name) gin_trgm_ops);
