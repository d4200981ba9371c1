-- A customer's mail processed after its own answer (a backlog fetched while the answer came in
-- live): the request the answer opened is found by the answer's In-Reply-To (docs/workflow.md,
-- "Decisions where the regulation is silent").
CREATE INDEX messages_in_reply_to_idx ON messages (in_reply_to) WHERE direction = 'in';
