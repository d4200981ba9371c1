"""Transport: moves raw bytes in (IMAP, MTA pipe) and out (SMTP). It never interprets mail."""
