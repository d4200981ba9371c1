-- mailbot register: the whole schema (DESIGN.md §4). This file is the truth;
-- mailbot/models.py mirrors it and tests/test_schema.py checks they match.
-- Later changes go through numbered files in mailbot/migrations/ AND are
-- folded in here, so a fresh `mailbot db init` and a migrated database agree.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE schema_version (
    version     integer PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------- the CRM side
CREATE TABLE organizations (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL,
    aliases       text[] NOT NULL DEFAULT '{}',      -- short names for subject matching
    email_domains text[] NOT NULL DEFAULT '{}',      -- lower-case mail domains of the company
    crm_id        text UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX organizations_domains_idx ON organizations USING gin (email_domains);

CREATE TABLE contacts (
    id               bigserial PRIMARY KEY,
    organization_id  bigint REFERENCES organizations (id) ON DELETE SET NULL,
    full_name        text NOT NULL DEFAULT '',      -- ФИО
    email            text NOT NULL UNIQUE CHECK (email = lower(email)),
    phone            text,
    -- who vouches for the contact (migration 0008): 'crm' (imported), 'staff' (set by a staff
    -- command) or 'mail' (what a sender wrote about himself): only 'crm' and 'staff' contacts
    -- may act on their organisation's requests
    source           text NOT NULL DEFAULT 'mail' CHECK (source IN ('crm', 'staff', 'mail')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX contacts_organization_idx ON contacts (organization_id);

CREATE TABLE support_contracts (
    id               bigserial PRIMARY KEY,
    organization_id  bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    number           text NOT NULL DEFAULT '',
    valid_from       date NOT NULL,
    valid_to         date NOT NULL,
    CHECK (valid_to >= valid_from),
    UNIQUE (organization_id, number, valid_from)
);
CREATE INDEX support_contracts_org_idx ON support_contracts (organization_id, valid_to);

-- ---------------------------------------------------------------- staff
CREATE TABLE staff (
    id                bigserial PRIMARY KEY,
    login             text NOT NULL UNIQUE,
    full_name         text NOT NULL,
    email             text NOT NULL UNIQUE CHECK (email = lower(email)),
    tier              text NOT NULL CHECK (tier IN ('tp1', 'tp2')),
    department        text NOT NULL DEFAULT '',
    qualification     text NOT NULL DEFAULT '',
    experience_years  integer NOT NULL DEFAULT 0 CHECK (experience_years >= 0),
    supervisor_id     bigint REFERENCES staff (id) ON DELETE SET NULL,
    active            boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------- known-error DB
CREATE TABLE incidents (
    id          bigserial PRIMARY KEY,
    number      text NOT NULL UNIQUE,               -- INC-000045
    title       text NOT NULL,
    symptoms    text NOT NULL DEFAULT '',
    solution    text NOT NULL DEFAULT '',
    status      text NOT NULL DEFAULT 'open'
                CHECK (status IN ('open', 'in_progress', 'solved', 'closed')),
    created_by  bigint REFERENCES staff (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    search      tsvector GENERATED ALWAYS AS (
                    to_tsvector('russian', title || ' ' || symptoms || ' ' || solution)) STORED
);
CREATE INDEX incidents_search_idx ON incidents USING gin (search);
CREATE INDEX incidents_title_trgm_idx ON incidents USING gin (title gin_trgm_ops);
CREATE SEQUENCE incident_number_seq;

-- ---------------------------------------------------------------- the register
CREATE TABLE request_counters (
    year   integer PRIMARY KEY,
    last   integer NOT NULL DEFAULT 0
);

CREATE TABLE requests (
    id                  bigserial PRIMARY KEY,
    number              text NOT NULL UNIQUE,       -- ТП-2026-000123
    organization_id     bigint REFERENCES organizations (id) ON DELETE SET NULL,
    contact_id          bigint REFERENCES contacts (id) ON DELETE SET NULL,
    requester_email     text NOT NULL DEFAULT '',
    requester_name      text NOT NULL DEFAULT '',
    channel             text NOT NULL DEFAULT 'email'
                        CHECK (channel IN ('email', 'phone', 'web', 'portal')),
    subject             text NOT NULL DEFAULT '',
    level               smallint CHECK (level BETWEEN 1 AND 4),
    status              text NOT NULL DEFAULT 'new'
                        CHECK (status IN ('new', 'awaiting_contact_info', 'open',
                                          'awaiting_customer', 'escalated_op4',
                                          'resolved', 'closed', 'rejected')),
    parent_id           bigint REFERENCES requests (id) ON DELETE SET NULL,
    incident_id         bigint REFERENCES incidents (id) ON DELETE SET NULL,
    assignee_id         bigint REFERENCES staff (id) ON DELETE SET NULL,
    thread_message_id   text,                       -- the customer's first Message-ID
    received_at         timestamptz NOT NULL,
    first_reaction_at   timestamptz,
    due_at              timestamptz,
    resolved_at         timestamptz,
    closed_at           timestamptz,
    confirmation        text NOT NULL DEFAULT 'none'
                        CHECK (confirmation IN ('none', 'requested', 'confirmed', 'rejected')),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (level IS DISTINCT FROM 4 OR parent_id IS NOT NULL)
);
CREATE INDEX requests_status_due_idx ON requests (status, due_at);
CREATE INDEX requests_requester_idx ON requests (requester_email);
CREATE INDEX requests_assignee_idx ON requests (assignee_id, id) WHERE assignee_id IS NOT NULL;
CREATE INDEX requests_assignee_open_idx ON requests (assignee_id)
    WHERE assignee_id IS NOT NULL AND status NOT IN ('closed', 'rejected');
-- the board's register (migration 0014): by deadline (none last), open (the expression
-- `(status IN ('closed', 'rejected')) IS FALSE`) or finished, per status, assignee, organisation
CREATE INDEX requests_deadline_idx ON requests ((coalesce(due_at, 'infinity'::timestamptz)), id);
CREATE INDEX requests_done_deadline_idx ON requests ((status IN ('closed', 'rejected')),
    (coalesce(due_at, 'infinity'::timestamptz)), id);
CREATE INDEX requests_status_deadline_idx
    ON requests (status, (coalesce(due_at, 'infinity'::timestamptz)), id);
CREATE INDEX requests_assignee_deadline_idx ON requests (assignee_id,
    (status IN ('closed', 'rejected')), (coalesce(due_at, 'infinity'::timestamptz)), id);
CREATE INDEX requests_organization_deadline_idx ON requests (organization_id,
    (status IN ('closed', 'rejected')), (coalesce(due_at, 'infinity'::timestamptz)), id);
CREATE INDEX requests_parent_idx ON requests (parent_id) WHERE level = 4;
CREATE INDEX requests_incident_idx ON requests (incident_id) WHERE incident_id IS NOT NULL;
-- requests waiting for their first reaction: the SLA board, overdue marks, the metrics
CREATE INDEX requests_awaiting_reaction_idx ON requests (due_at)
    WHERE first_reaction_at IS NULL AND (status IN ('closed', 'rejected')) IS FALSE;
-- the register's text filter: number, subject, requester (substring, any case)
CREATE INDEX requests_text_trgm_idx ON requests USING gin (
    (number || ' ' || subject || ' ' || requester_email || ' ' || requester_name) gin_trgm_ops);

-- ---------------------------------------------------------------- intake
CREATE TABLE inbound (
    id            bigserial PRIMARY KEY,
    dedup_key     text NOT NULL UNIQUE,             -- 'mid:<Message-ID>' or 'sha256:<hex>'
    source        text NOT NULL,                    -- 'imap:<account>/<folder>', 'ingest', ...
    uid           bigint,                           -- IMAP UID when from IMAP
    raw           bytea NOT NULL,
    size          integer NOT NULL,
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'processed', 'quarantined')),
    received_at   timestamptz NOT NULL DEFAULT now(),
    processed_at  timestamptz
);
CREATE INDEX inbound_pending_idx ON inbound (id) WHERE status = 'pending';

CREATE TABLE quarantine (
    id           bigserial PRIMARY KEY,
    inbound_id   bigint NOT NULL UNIQUE REFERENCES inbound (id) ON DELETE CASCADE,
    stage        text NOT NULL,                     -- parse, rules, workflow
    error        text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    resolved_at  timestamptz,
    resolution   text CHECK (resolution IN ('retried', 'dropped'))
);

CREATE TABLE mailbox_state (
    mailbox      text PRIMARY KEY,                  -- '<account>/<folder>'
    uidvalidity  bigint NOT NULL,
    last_uid     bigint NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------- outgoing
CREATE TABLE outbox (
    id               bigserial PRIMARY KEY,
    message_id       text NOT NULL UNIQUE,          -- fixed at creation, no brackets
    kind             text NOT NULL,                 -- ack, relay, notify, bounce, ...
    request_id       bigint REFERENCES requests (id) ON DELETE SET NULL,
    mail_from        text NOT NULL,                 -- envelope sender
    recipients       text[] NOT NULL,
    raw              bytea NOT NULL,                -- the message as sent, files as placeholders (outbox_files)
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'sent', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    claimed_by       bigint                         -- key of the sending daemon's lock (migration 0007)
);
CREATE INDEX outbox_due_idx ON outbox (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX outbox_kind_recipient_idx ON outbox (kind, created_at);

-- Addresses our SMTP server refused for good (migration 0007): later mail to them fails at
-- once with the server's words. `mailbot undeliverable forget ADDRESS` removes one.
CREATE TABLE undeliverable_addresses (
    address     text PRIMARY KEY CHECK (address = lower(address)),
    reply       text NOT NULL,
    refused_at  timestamptz NOT NULL DEFAULT now(),
    outbox_id   bigint REFERENCES outbox (id) ON DELETE SET NULL
);

-- ---------------------------------------------------------------- the trail
CREATE TABLE messages (
    id            bigserial PRIMARY KEY,
    request_id    bigint REFERENCES requests (id) ON DELETE CASCADE,
    direction     text NOT NULL CHECK (direction IN ('in', 'out')),
    inbound_id    bigint UNIQUE REFERENCES inbound (id) ON DELETE SET NULL,
    outbox_id     bigint UNIQUE REFERENCES outbox (id) ON DELETE SET NULL,
    message_id    text,                             -- without brackets
    in_reply_to   text,
    kind          text NOT NULL DEFAULT 'human',    -- human, auto_reply, dsn, mdn, bulk, ack, relay, ...
    sender        text NOT NULL DEFAULT '',
    recipients    text[] NOT NULL DEFAULT '{}',
    subject       text NOT NULL DEFAULT '',
    body          text NOT NULL DEFAULT '',
    sent_at       timestamptz,                      -- the Date header
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((direction = 'in') = (outbox_id IS NULL))
);
CREATE INDEX messages_message_id_idx ON messages (message_id);
CREATE INDEX messages_request_idx ON messages (request_id, id);

-- The file store (migration 0005): the decoded files of mail stored by version 5, once per
-- content, by the SHA-256 of their bytes. Since migration 0006 the files of a mail stay in
-- its raw message (inbound.raw) and are decoded again when read (mailbot/files.py).
CREATE TABLE files (
    sha256     text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size       integer NOT NULL,
    data       bytea NOT NULL,
    stored_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE attachments (
    id            bigserial PRIMARY KEY,
    message_id    bigint NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    filename      text NOT NULL,
    content_type  text NOT NULL,
    size          integer NOT NULL,
    sha256        text NOT NULL,  -- which file of the message's raw mail (or of files)
    inline        boolean NOT NULL DEFAULT false
);
CREATE INDEX attachments_message_idx ON attachments (message_id);
CREATE INDEX attachments_sha256_idx ON attachments (sha256);

-- Files that go out with a mail (a customer's files in a staff notification, a staff
-- member's files in an answer) are not copied: outbox.raw holds a placeholder for
-- each, replaced by the file's base64 text when the mail is sent.
CREATE TABLE outbox_files (
    id             bigserial PRIMARY KEY,
    outbox_id      bigint NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    attachment_id  bigint NOT NULL REFERENCES attachments (id),
    placeholder    text NOT NULL
);
CREATE INDEX outbox_files_outbox_idx ON outbox_files (outbox_id);

CREATE TABLE deliveries (
    id             bigserial PRIMARY KEY,
    request_id     bigint NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    outbox_id      bigint REFERENCES outbox (id) ON DELETE SET NULL,
    recipient      text NOT NULL,
    status         text NOT NULL DEFAULT 'sent'
                   CHECK (status IN ('sent', 'confirmed', 'failed')),
    confirmed_by   text CHECK (confirmed_by IN ('mdn', 'reply', 'phone')),
    confirmed_at   timestamptz,
    failure        text,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deliveries_request_idx ON deliveries (request_id);
CREATE INDEX deliveries_outbox_idx ON deliveries (outbox_id);

CREATE TABLE escalations (
    id              bigserial PRIMARY KEY,
    request_id      bigint NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    incident_id     bigint REFERENCES incidents (id) ON DELETE SET NULL,
    outbox_id       bigint REFERENCES outbox (id) ON DELETE SET NULL,
    subject         text NOT NULL,
    status          text NOT NULL DEFAULT 'sent'
                    CHECK (status IN ('sent', 'answered', 'solved', 'closed')),
    sent_at         timestamptz NOT NULL,
    due_at          timestamptz NOT NULL,
    answered_at     timestamptz,
    result_sent_at  timestamptz
);
CREATE INDEX escalations_request_idx ON escalations (request_id);

CREATE TABLE events (
    id           bigserial PRIMARY KEY,
    request_id   bigint REFERENCES requests (id) ON DELETE CASCADE,
    at           timestamptz NOT NULL,
    actor        text NOT NULL,                     -- 'system', a staff login, a customer address
    kind         text NOT NULL,                     -- created, status, level, assigned, message_in, ...
    from_status  text,
    to_status    text,
    message_id   bigint REFERENCES messages (id) ON DELETE SET NULL,
    details      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX events_request_idx ON events (request_id, at);
-- alerts to staff are rate-limited per subject (a sender, the auto-reply cap): migration 0008
CREATE INDEX events_alert_idx ON events ((details ->> 'about'), at) WHERE kind = 'alert';

-- ---------------------------------------------------------------- storage (migration 0002)
-- Mail and files are mostly base64 or already compressed: store them uncompressed, out of line.
ALTER TABLE inbound ALTER COLUMN raw SET STORAGE EXTERNAL;
ALTER TABLE files ALTER COLUMN data SET STORAGE EXTERNAL;
ALTER TABLE outbox ALTER COLUMN raw SET STORAGE EXTERNAL;

-- ---------------------------------------------------------------- the board (migration 0014)
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
