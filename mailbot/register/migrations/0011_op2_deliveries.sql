-- ОП2 (regulation §3): deliveries of files to customers are tracked until confirmed, and
-- files asked of customers until they arrive. Deliveries were never written before this
-- version, so the changed checks hold for every existing row.
ALTER TABLE deliveries
    ADD COLUMN files text[] NOT NULL DEFAULT '{}',
    ADD COLUMN settled_at timestamptz,
    ADD COLUMN settled_by text,
    ADD COLUMN settled_message_id bigint REFERENCES messages (id) ON DELETE SET NULL,
    ADD COLUMN note text,
    ADD COLUMN reminders integer NOT NULL DEFAULT 0,
    ADD COLUMN reminded_at timestamptz,
    ADD COLUMN staff_told_at timestamptz;
UPDATE deliveries SET settled_at = coalesce(confirmed_at, created_at) WHERE status <> 'sent';
UPDATE deliveries SET confirmed_by = 'staff' WHERE confirmed_by = 'phone';
ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_status_check;
ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_confirmed_by_check;
ALTER TABLE deliveries
    ADD CONSTRAINT deliveries_status_check
        CHECK (status IN ('sent', 'confirmed', 'failed', 'waived')),
    ADD CONSTRAINT deliveries_confirmed_by_check CHECK (confirmed_by IN ('mdn', 'reply', 'staff')),
    ADD CHECK ((status = 'sent') = (settled_at IS NULL)),
    ADD CHECK ((status = 'confirmed') = (confirmed_by IS NOT NULL AND confirmed_at IS NOT NULL));
CREATE INDEX deliveries_waiting_idx ON deliveries (created_at) WHERE status = 'sent';

CREATE TABLE file_requests (
    id                   bigserial PRIMARY KEY,
    request_id           bigint NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    asked                text NOT NULL,
    asked_by             text NOT NULL,
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
