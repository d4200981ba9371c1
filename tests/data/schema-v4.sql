-- The register as mailbot created it at schema version 4 (before the file store, 0005):
-- upgrades are tested from it. Never edit: it is what older databases look like.
-- mailbot register: the whole schema (DESIGN.md §4). This file is the truth;
-- mailbot/register/models.py mirrors it and tests/test_schema.py checks they match.
-- Later changes go through numbered files in mailbot/register/migrations/ AND are
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
    sent_at          timestamptz
);
CREATE INDEX outbox_due_idx ON outbox (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX outbox_kind_recipient_idx ON outbox (kind, created_at);

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

CREATE TABLE attachments (
    id            bigserial PRIMARY KEY,
    message_id    bigint NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    filename      text NOT NULL,
    content_type  text NOT NULL,
    size          integer NOT NULL,
    sha256        text NOT NULL,
    inline        boolean NOT NULL DEFAULT false,
    data          bytea NOT NULL
);
CREATE INDEX attachments_message_idx ON attachments (message_id);

-- Files that go out with a mail (a customer's files in a staff notification, a staff
-- member's files in an answer) are stored once, in attachments: outbox.raw holds a
-- placeholder for each, replaced by the file's base64 text when the mail is sent.
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

-- ---------------------------------------------------------------- storage (migration 0002)
-- Mail and files are mostly base64 or already compressed: store them uncompressed, out of line.
ALTER TABLE inbound ALTER COLUMN raw SET STORAGE EXTERNAL;
ALTER TABLE attachments ALTER COLUMN data SET STORAGE EXTERNAL;
ALTER TABLE outbox ALTER COLUMN raw SET STORAGE EXTERNAL;
