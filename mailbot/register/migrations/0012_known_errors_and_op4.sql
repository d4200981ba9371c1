-- The known-error database (regulation §4–5) and ОП4, the ТП1 → ТП2 protocol (issue 17).

-- Incidents: the statuses of the issue (old ones mapped: open → new, in_progress →
-- investigating), product and version, "duplicate of another", a weighted search vector in
-- which error codes are written alike (kb_text), and the vocabulary of their words.
CREATE FUNCTION kb_text(text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN regexp_replace($1, '([[:alpha:]])[-_]([[:digit:]])', '\1\2', 'g');

ALTER TABLE incidents DROP CONSTRAINT incidents_status_check;
UPDATE incidents SET status = CASE status WHEN 'open' THEN 'new'
                                          WHEN 'in_progress' THEN 'investigating'
                                          ELSE status END;
ALTER TABLE incidents ALTER COLUMN status SET DEFAULT 'new';
ALTER TABLE incidents ADD CONSTRAINT incidents_status_check
    CHECK (status IN ('new', 'investigating', 'solved', 'closed', 'duplicate'));
ALTER TABLE incidents
    ADD COLUMN product text NOT NULL DEFAULT '',
    ADD COLUMN version text NOT NULL DEFAULT '',
    ADD COLUMN duplicate_of bigint REFERENCES incidents (id) ON DELETE SET NULL,
    ADD CONSTRAINT incidents_check CHECK (status <> 'duplicate' OR duplicate_of IS NOT NULL);

DROP INDEX incidents_title_trgm_idx;
ALTER TABLE incidents DROP COLUMN search;
ALTER TABLE incidents ADD COLUMN search tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('russian', kb_text(title)), 'A')
    || setweight(to_tsvector('russian', kb_text(symptoms)), 'B')
    || setweight(to_tsvector('russian', kb_text(solution)), 'C')
    || setweight(to_tsvector('russian', kb_text(product || ' ' || version)), 'D')) STORED;
CREATE INDEX incidents_search_idx ON incidents USING gin (search);

-- numbers come from the sequence from now on: it continues after the highest number given
SELECT setval('incident_number_seq', coalesce(max(substring(number FROM '([0-9]+)$')::bigint), 1),
              max(substring(number FROM '([0-9]+)$')) IS NOT NULL)
FROM incidents;

CREATE TABLE incident_terms (
    lexeme  text PRIMARY KEY,
    ndoc    integer NOT NULL
);
CREATE INDEX incident_terms_trgm_idx ON incident_terms USING gin (lexeme gin_trgm_ops);
INSERT INTO incident_terms (lexeme, ndoc)
SELECT l.lexeme, count(*) FROM incidents, unnest(tsvector_to_array(search)) AS l(lexeme)
GROUP BY l.lexeme
UNION ALL SELECT '', count(*) FROM incidents;  -- the row '' counts the incidents


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
INSERT INTO incident_title_words (lexeme, incident_id)
SELECT l.lexeme, id FROM incidents, unnest(tsvector_to_array(ts_filter(search, '{a}'))) AS l(lexeme);
CREATE TRIGGER incident_terms_insert AFTER INSERT ON incidents
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION incident_terms_count();
CREATE TRIGGER incident_terms_update AFTER UPDATE ON incidents
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION incident_terms_count();
CREATE TRIGGER incident_terms_delete AFTER DELETE ON incidents
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION incident_terms_count();

CREATE TABLE incident_history (
    id           bigserial PRIMARY KEY,
    incident_id  bigint NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    at           timestamptz NOT NULL,
    actor        text NOT NULL,
    kind         text NOT NULL,
    changes      jsonb NOT NULL DEFAULT '{}',
    request_id   bigint REFERENCES requests (id) ON DELETE SET NULL,
    message_id   bigint REFERENCES messages (id) ON DELETE SET NULL
);
CREATE INDEX incident_history_incident_idx ON incident_history (incident_id, id);
INSERT INTO incident_history (incident_id, at, actor, kind)
SELECT id, created_at, 'system', 'created' FROM incidents;

CREATE INDEX requests_incident_idx ON requests (incident_id) WHERE incident_id IS NOT NULL;
CREATE INDEX requests_parent_idx ON requests (parent_id) WHERE parent_id IS NOT NULL;

-- ОП4: the mailbox a message came from, and who escalated.
ALTER TABLE inbound ADD COLUMN mailbox text NOT NULL DEFAULT 'support'
    CHECK (mailbox IN ('support', 'tp2'));
ALTER TABLE escalations ADD COLUMN escalated_by bigint REFERENCES staff (id) ON DELETE SET NULL;
