-- The language of the customer's automatic mail (docs/workflow.md, "Customers who write in
-- English"): 'en' when the mail that opened the request held Latin letters and no Cyrillic.
ALTER TABLE requests ADD COLUMN language text NOT NULL DEFAULT 'ru'
    CHECK (language IN ('ru', 'en'));
