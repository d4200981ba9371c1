-- Assignment asks, for each eligible staff member, how many open requests they hold and
-- when they last got one: both from an index, however long the history grows.
DROP INDEX IF EXISTS requests_assignee_idx;
CREATE INDEX requests_assignee_idx ON requests (assignee_id, id) WHERE assignee_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS requests_assignee_open_idx ON requests (assignee_id)
    WHERE assignee_id IS NOT NULL AND status NOT IN ('closed', 'rejected');
