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
-- The regulation's "внутренняя база данных выявленных ошибок" (§4–5, migration 0012).
-- Error codes are written alike in incidents and in searches: a letter, a hyphen or
-- underscore and a digit become one word (ORA-12541 = ORA12541, E-17 = E17).
CREATE FUNCTION kb_text(text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN regexp_replace($1, '([[:alpha:]])[-_]([[:digit:]])', '\1\2', 'g');

CREATE TABLE incidents (
    id            bigserial PRIMARY KEY,
    number        text NOT NULL UNIQUE,             -- INC-000045
    title         text NOT NULL,
    symptoms      text NOT NULL DEFAULT '',
    solution      text NOT NULL DEFAULT '',
    product       text NOT NULL DEFAULT '',
    version       text NOT NULL DEFAULT '',
    status        text NOT NULL DEFAULT 'new'
                  CHECK (status IN ('new', 'investigating', 'solved', 'closed', 'duplicate')),
    duplicate_of  bigint REFERENCES incidents (id) ON DELETE SET NULL,
    created_by    bigint REFERENCES staff (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    -- title A, symptoms B, solution C, product and version D (mailbot/kb/search.py)
    search        tsvector GENERATED ALWAYS AS (
                      setweight(to_tsvector('russian', kb_text(title)), 'A')
                      || setweight(to_tsvector('russian', kb_text(symptoms)), 'B')
                      || setweight(to_tsvector('russian', kb_text(solution)), 'C')
                      || setweight(to_tsvector('russian', kb_text(product || ' ' || version)), 'D')) STORED,
    CHECK (status <> 'duplicate' OR duplicate_of IS NOT NULL)
);
CREATE INDEX incidents_search_idx ON incidents USING gin (search);
CREATE SEQUENCE incident_number_seq;

-- Every word (lexeme) of the incidents and in how many it occurs, kept by the triggers below
-- (the row '' counts the incidents): typos are corrected against it (trigram similarity) and
-- rare words pick the candidates.
CREATE TABLE incident_terms (
    lexeme  text PRIMARY KEY,
    ndoc    integer NOT NULL
);
CREATE INDEX incident_terms_trgm_idx ON incident_terms USING gin (lexeme gin_trgm_ops);
INSERT INTO incident_terms (lexeme, ndoc) VALUES ('', 0);

-- The lexemes of each incident's title, by lexeme (kept by the triggers below): a long text's
-- candidates are the incidents whose titles hold the most of its rare words.
CREATE TABLE incident_title_words (
    lexeme       text NOT NULL,
    incident_id  bigint NOT NULL,
    PRIMARY KEY (lexeme, incident_id)
);

CREATE FUNCTION incident_terms_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed bigint[];  -- UPDATE: the incidents whose text changed
BEGIN
    -- writers of incidents take their turns here (the counter row first): no deadlocks
    PERFORM 1 FROM incident_terms WHERE lexeme = '' FOR UPDATE;
    IF TG_OP = 'UPDATE' THEN
        changed := ARRAY(SELECT o.id FROM old_rows o JOIN new_rows n ON n.id = o.id
                         WHERE o.search IS DISTINCT FROM n.search);
        IF cardinality(changed) = 0 THEN
            RETURN NULL;
        END IF;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE incident_terms t SET ndoc = t.ndoc - d.n
        FROM (SELECT l.lexeme, count(*) AS n
              FROM old_rows o, unnest(tsvector_to_array(o.search)) AS l(lexeme)
              WHERE TG_OP = 'DELETE' OR o.id = ANY(changed)
              GROUP BY l.lexeme
              UNION ALL
              SELECT '', count(*) FROM old_rows o WHERE TG_OP = 'DELETE' OR o.id = ANY(changed)
              ORDER BY 1) AS d
        WHERE t.lexeme = d.lexeme;
        DELETE FROM incident_title_words w USING old_rows o
        WHERE w.incident_id = o.id AND (TG_OP = 'DELETE' OR o.id = ANY(changed));
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO incident_terms (lexeme, ndoc)
        SELECT * FROM (SELECT l.lexeme, count(*)
                       FROM new_rows n, unnest(tsvector_to_array(n.search)) AS l(lexeme)
                       WHERE TG_OP = 'INSERT' OR n.id = ANY(changed)
                       GROUP BY l.lexeme
                       UNION ALL
                       SELECT '', count(*) FROM new_rows n
                       WHERE TG_OP = 'INSERT' OR n.id = ANY(changed)) AS d
        ORDER BY 1
        ON CONFLICT (lexeme) DO UPDATE SET ndoc = incident_terms.ndoc + EXCLUDED.ndoc;
        INSERT INTO incident_title_words (lexeme, incident_id)
        SELECT l.lexeme, n.id
        FROM new_rows n, unnest(tsvector_to_array(ts_filter(n.search, '{a}'))) AS l(lexeme)
        WHERE TG_OP = 'INSERT' OR n.id = ANY(changed);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER incident_terms_insert AFTER INSERT ON incidents
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION incident_terms_count();
CREATE TRIGGER incident_terms_update AFTER UPDATE ON incidents
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION incident_terms_count();
CREATE TRIGGER incident_terms_delete AFTER DELETE ON incidents
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION incident_terms_count();

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
    -- the request this one continues: a new question asked in a reply that confirmed it (0015)
    follows_id          bigint REFERENCES requests (id) ON DELETE SET NULL,
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
    -- the SLA clock (migration 0013): when the request was opened (the reaction clock starts;
    -- later than received_at when the customer's contact details were waited for), and since
    -- when the customer waits for a human reaction (NULL: nobody owes one); due_at is the
    -- deadline of that reaction
    opened_at           timestamptz,
    waiting_since       timestamptz,
    -- the language of the customer's automatic mail (migration 0019): 'en' when the mail that
    -- opened the request held Latin letters and no Cyrillic
    language            text NOT NULL DEFAULT 'ru' CHECK (language IN ('ru', 'en')),
    CHECK (level IS DISTINCT FROM 4 OR parent_id IS NOT NULL)
);
CREATE INDEX requests_status_due_idx ON requests (status, due_at);
-- the SLA clock's scans (migration 0013): each reads only the rows its clock is running on
CREATE INDEX requests_reaction_clock_idx ON requests (due_at) WHERE waiting_since IS NOT NULL;
CREATE INDEX requests_resolved_clock_idx ON requests (resolved_at) WHERE status = 'resolved';
CREATE INDEX requests_contact_clock_idx ON requests (received_at)
    WHERE status = 'awaiting_contact_info';
CREATE INDEX requests_requester_idx ON requests (requester_email);
CREATE INDEX requests_assignee_idx ON requests (assignee_id, id) WHERE assignee_id IS NOT NULL;
CREATE INDEX requests_assignee_open_idx ON requests (assignee_id)
    WHERE assignee_id IS NOT NULL AND status NOT IN ('closed', 'rejected');
CREATE INDEX requests_incident_idx ON requests (incident_id) WHERE incident_id IS NOT NULL;
CREATE INDEX requests_parent_idx ON requests (parent_id) WHERE parent_id IS NOT NULL;
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
    -- the role of the mailbox it came from (migration 0012): the support address, or ТП2's
    mailbox       text NOT NULL DEFAULT 'support' CHECK (mailbox IN ('support', 'tp2')),
    uid           bigint,                           -- IMAP UID when from IMAP
    raw           bytea NOT NULL,
    size          integer NOT NULL,
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'processed', 'quarantined')),
    received_at   timestamptz NOT NULL DEFAULT now(),
    processed_at  timestamptz,
    -- what ties it to other mail (migration 0017): 'from:<sender>', 'mid:<Message-ID>' (its own
    -- and those it refers to), 'num:<year>-<serial>' (its subject's request numbers); pending
    -- mail sharing a key is processed in order by one daemon at a time
    thread_keys   text[] NOT NULL DEFAULT '{}'
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

-- Addresses our mail cannot reach (migration 0007; 0015): our SMTP server refused them for good
-- ('smtp'), or a bounce of our mail failed them permanently ('dsn'). No automatic mail goes to
-- them; a staff answer is tried, and the server accepting it clears the mark, as do
-- `#адрес исправлен` and `mailbot undeliverable forget ADDRESS`.
CREATE TABLE undeliverable_addresses (
    address     text PRIMARY KEY CHECK (address = lower(address)),
    reply       text NOT NULL,
    refused_at  timestamptz NOT NULL DEFAULT now(),
    outbox_id   bigint REFERENCES outbox (id) ON DELETE SET NULL,
    source      text NOT NULL DEFAULT 'smtp' CHECK (source IN ('smtp', 'dsn'))
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
CREATE INDEX messages_in_reply_to_idx ON messages (in_reply_to) WHERE direction = 'in';

-- The file store (migration 0005): the decoded files of mail stored by version 5, once per
-- content, by the SHA-256 of their bytes. Since migration 0006 the files of a mail stay in
-- its raw message (inbound.raw) and are decoded again when read (mailbot/register/files.py).
CREATE TABLE files (
    sha256     text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size       integer NOT NULL,
    data       bytea NOT NULL,
    stored_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE attachments (
    id            bigserial PRIMARY KEY,
    message_id    bigint NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    filename      text NOT NULL,                    -- safe on any file system (parsers/attachments.py)
    original_filename text,                         -- as the mail named it, when it did (0015)
    content_type  text NOT NULL,
    size          integer NOT NULL,
    sha256        text NOT NULL,  -- which file of the message's raw mail (or of files)
    inline        boolean NOT NULL DEFAULT false,
    -- where its encoded body lies in the raw mail (0017): bytes part_start to part_end, in
    -- part_encoding; NULL when it is not one slice of it (mailbot/files.py parses the mail then)
    part_start    bigint,
    part_end      bigint,
    part_encoding text
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

-- ОП2 (regulation §3, migration 0011): each mail that carries files to a customer, per
-- recipient. It asks for a read receipt (RFC 8098) and waits in 'sent' until it is confirmed
-- (an MDN 'displayed', the customer's reply, a staff member's word), fails (a bounce, an MDN
-- 'deleted', the customer's "не получили") or is waived (closed by staff override with a
-- reason). settled_* say when, by whom and by which message it left 'sent'.
CREATE TABLE deliveries (
    id                  bigserial PRIMARY KEY,
    request_id          bigint NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    outbox_id           bigint REFERENCES outbox (id) ON DELETE SET NULL,
    recipient           text NOT NULL,
    files               text[] NOT NULL DEFAULT '{}',    -- the names of the files it carried
    status              text NOT NULL DEFAULT 'sent'
                        CHECK (status IN ('sent', 'confirmed', 'failed', 'waived')),
    confirmed_by        text CHECK (confirmed_by IN ('mdn', 'reply', 'staff')),
    confirmed_at        timestamptz,
    failure             text,
    settled_at          timestamptz,                     -- when it left 'sent'
    settled_by          text,                            -- a customer address, a staff login, 'mailer-daemon', 'smtp'
    settled_message_id  bigint REFERENCES messages (id) ON DELETE SET NULL,  -- the MDN, reply, DSN or staff mail
    note                text,                            -- how, in words: a staff member's, a waiver's reason
    reminders           integer NOT NULL DEFAULT 0,      -- reminders sent to the customer
    reminded_at         timestamptz,
    staff_told_at       timestamptz,                     -- the assignee told it stays unconfirmed
    created_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'sent') = (settled_at IS NULL)),
    CHECK ((status = 'confirmed') = (confirmed_by IS NOT NULL AND confirmed_at IS NOT NULL))
);
CREATE INDEX deliveries_request_idx ON deliveries (request_id);
CREATE INDEX deliveries_outbox_idx ON deliveries (outbox_id);
CREATE INDEX deliveries_waiting_idx ON deliveries (created_at) WHERE status = 'sent';

-- Files asked of a customer (logs, screenshots; regulation §3, migration 0011): the request
-- waits for them; a reply of the customer carrying files receives them.
CREATE TABLE file_requests (
    id                   bigserial PRIMARY KEY,
    request_id           bigint NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    asked                text NOT NULL,                  -- what was asked for, as staff wrote it
    asked_by             text NOT NULL,                  -- the staff login
    status               text NOT NULL DEFAULT 'waiting'
                         CHECK (status IN ('waiting', 'received', 'cancelled')),
    reminders            integer NOT NULL DEFAULT 0,
    reminded_at          timestamptz,
    staff_told_at        timestamptz,
    received_at          timestamptz,
    received_message_id  bigint REFERENCES messages (id) ON DELETE SET NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'received') = (received_at IS NOT NULL))
);
CREATE INDEX file_requests_request_idx ON file_requests (request_id);
CREATE INDEX file_requests_waiting_idx ON file_requests (created_at) WHERE status = 'waiting';

CREATE TABLE escalations (
    id              bigserial PRIMARY KEY,
    request_id      bigint NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    incident_id     bigint REFERENCES incidents (id) ON DELETE SET NULL,
    outbox_id       bigint REFERENCES outbox (id) ON DELETE SET NULL,
    subject         text NOT NULL,
    status          text NOT NULL DEFAULT 'sent'
                    CHECK (status IN ('sent', 'answered', 'solved', 'closed')),
    sent_at         timestamptz NOT NULL,
    due_at          timestamptz NOT NULL,               -- ТП2's answer is due (sla.norm_op4)
    answered_at     timestamptz,                        -- ТП2's first answer to ТП1
    result_sent_at  timestamptz,                        -- the result notice to ТП2
    escalated_by    bigint REFERENCES staff (id) ON DELETE SET NULL  -- the ТП1 member (migration 0012)
);
CREATE INDEX escalations_request_idx ON escalations (request_id);
CREATE INDEX escalations_unanswered_idx ON escalations (due_at)  -- migration 0013
    WHERE status = 'sent' AND answered_at IS NULL;

-- What happened to an incident, and who did it (migration 0012): created, edited (changes:
-- {field: [old, new]}), status, linked (to a request), solution, imported.
CREATE TABLE incident_history (
    id           bigserial PRIMARY KEY,
    incident_id  bigint NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    at           timestamptz NOT NULL,
    actor        text NOT NULL,                     -- a staff login, 'system', 'cli'
    kind         text NOT NULL,
    changes      jsonb NOT NULL DEFAULT '{}',
    request_id   bigint REFERENCES requests (id) ON DELETE SET NULL,
    message_id   bigint REFERENCES messages (id) ON DELETE SET NULL
);
CREATE INDEX incident_history_incident_idx ON incident_history (incident_id, id);

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

-- ---------------------------------------------------------------- the SLA clock (migration 0013)
-- Each step of a clock's ladder (a warning, a reminder, a breach, the escalation up) happens once
-- per request, clock and cycle: the row is inserted ON CONFLICT DO NOTHING in the transaction
-- that writes its mail, so a restart or a second daemon never repeats it. The cycle is the
-- deadline the step was counted against: a new deadline (a level change, a reopened request, a
-- new escalation, delivery or solution) starts a fresh ladder (docs/workflow.md).
CREATE TABLE sla_steps (
    id          bigserial PRIMARY KEY,
    request_id  bigint NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    clock       text NOT NULL CHECK (clock IN ('reaction', 'op4_answer', 'delivery',
                                                'confirmation', 'contact_info')),
    cycle       timestamptz NOT NULL,             -- the deadline the step was counted against
    started_at  timestamptz NOT NULL,             -- when the clock of this cycle started
    step        text NOT NULL CHECK (step IN ('warning', 'reminder', 'breach', 'escalation')),
    at          timestamptz NOT NULL,
    recipients  text[] NOT NULL DEFAULT '{}',
    UNIQUE (request_id, clock, cycle, step)
);

-- One row per digest slot (a configured time on a working day): who sends it is whoever
-- inserts the row.
CREATE TABLE sla_digests (
    slot     timestamptz PRIMARY KEY,
    sent_at  timestamptz NOT NULL,
    mails    integer NOT NULL DEFAULT 0
);

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
