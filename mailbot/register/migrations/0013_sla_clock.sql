-- The SLA clock (issue 18): when a request was opened (its reaction clock starts then, after
-- any wait for the customer's contact details) and since when the customer waits for a human
-- reaction (NULL: nobody owes one; due_at is that reaction's deadline).
ALTER TABLE requests ADD COLUMN opened_at timestamptz;
ALTER TABLE requests ADD COLUMN waiting_since timestamptz;
UPDATE requests SET opened_at = received_at WHERE due_at IS NOT NULL;
UPDATE requests SET waiting_since = received_at
    WHERE due_at IS NOT NULL AND first_reaction_at IS NULL AND status IN ('open', 'escalated_op4');

-- Each clock's scan reads only the rows its clock runs on.
CREATE INDEX requests_reaction_clock_idx ON requests (due_at) WHERE waiting_since IS NOT NULL;
CREATE INDEX requests_resolved_clock_idx ON requests (resolved_at) WHERE status = 'resolved';
CREATE INDEX requests_contact_clock_idx ON requests (received_at)
    WHERE status = 'awaiting_contact_info';
CREATE INDEX escalations_unanswered_idx ON escalations (due_at)
    WHERE status = 'sent' AND answered_at IS NULL;

-- Each step of a clock's ladder happens once per request, clock and cycle (the deadline it was
-- counted against): inserted ON CONFLICT DO NOTHING with its mail.
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

-- One row per digest slot (a configured time on a working day), inserted by whoever sends it.
CREATE TABLE sla_digests (
    slot     timestamptz PRIMARY KEY,
    sent_at  timestamptz NOT NULL,
    mails    integer NOT NULL DEFAULT 0
);
