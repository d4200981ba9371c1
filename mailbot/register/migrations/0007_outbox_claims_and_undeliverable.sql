-- Outbox rows are claimed by a sending daemon, not leased for a fixed time: a claim carries
-- the key of the advisory lock its daemon holds (mailbot/transport/claims.py), and a claim
-- whose key is no longer locked (the daemon died) is taken over at once.
ALTER TABLE outbox ADD COLUMN claimed_by bigint;

-- Addresses our SMTP server refused for good (5xx to RCPT): later mail to them fails at
-- once with the server's words instead of asking the server again.
CREATE TABLE undeliverable_addresses (
    address     text PRIMARY KEY CHECK (address = lower(address)),
    reply       text NOT NULL,
    refused_at  timestamptz NOT NULL DEFAULT now(),
    outbox_id   bigint REFERENCES outbox (id) ON DELETE SET NULL
);
