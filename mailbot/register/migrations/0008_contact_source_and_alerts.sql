-- Who vouches for a contact: 'crm' (imported from the CRM), 'staff' (a staff command set its
-- organisation) or 'mail' (the sender named his company and name himself). Only 'crm' and
-- 'staff' contacts may act on their organisation's requests (confirm, refuse, reopen).
-- Contacts stored before this version cannot be told apart and become 'mail': import the CRM
-- export again (`mailbot crm import FILE`) to mark the CRM's contacts as 'crm'.
ALTER TABLE contacts ADD COLUMN source text NOT NULL DEFAULT 'mail'
    CHECK (source IN ('crm', 'staff', 'mail'));

-- Alerts to staff (unauthenticated staff mail, strangers' mail, the auto-reply cap) are sent at
-- most once per subject and hour: looked up by details->>'about'.
CREATE INDEX events_alert_idx ON events ((details ->> 'about'), at) WHERE kind = 'alert';
