"""Write and answer mail on the development mail server of `make run` (the README walk-through).

    .venv/bin/python deploy/dev-mail.py write FROM SUBJECT TEXT
    .venv/bin/python deploy/dev-mail.py reply ACCOUNT TEXT

``write`` sends a new mail from FROM to the support address; ``reply`` answers the newest mail
in ACCOUNT's inbox (to its Reply-To, in its thread, as a mail program does) and prints what it
answered. Every address on the development server is a mailbox (password ``secret``); the
web mail at http://127.0.0.1:4080/ does the same by hand. TEXT may hold ``\\n`` for new lines.
"""
from __future__ import annotations

import email
import email.policy
import smtplib
import sys
from email.message import EmailMessage
from email.utils import make_msgid

from imapclient import IMAPClient

HOST, SMTP_PORT, IMAP_PORT, PASSWORD = "127.0.0.1", 4025, 4143, "secret"
SUPPORT = "support@localhost"


def send(message: EmailMessage) -> None:
    message["Message-ID"] = make_msgid(domain=message["From"].rpartition("@")[2])
    with smtplib.SMTP(HOST, SMTP_PORT) as smtp:
        smtp.send_message(message)


def write(sender: str, subject: str, text: str) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, SUPPORT, subject
    message.set_content(text)
    send(message)
    print(f"{sender} wrote to {SUPPORT}: {subject}")


def reply(account: str, text: str) -> None:
    with IMAPClient(HOST, IMAP_PORT, ssl=False) as imap:
        imap.login(account, PASSWORD)
        imap.select_folder("INBOX")
        uids = imap.search("ALL")
        if not uids:
            sys.exit(f"{account} has no mail yet: wait a few seconds and try again")
        raw = imap.fetch([max(uids)], ["RFC822"])[max(uids)][b"RFC822"]
    original = email.message_from_bytes(raw, policy=email.policy.default)
    message = EmailMessage()
    message["From"] = account
    message["To"] = original["Reply-To"] or original["From"]
    subject = str(original["Subject"])
    message["Subject"] = subject if subject.lower().startswith("re:") else f"Re: {subject}"
    message["In-Reply-To"] = original["Message-ID"]
    message["References"] = " ".join(filter(None, [original["References"], original["Message-ID"]]))
    message.set_content(text)
    send(message)
    print(f"{account} answered «{subject}»")


def main(argv: list[str]) -> None:
    if len(argv) == 4 and argv[0] == "write":
        write(argv[1], argv[2], argv[3].replace("\\n", "\n"))
    elif len(argv) == 3 and argv[0] == "reply":
        reply(argv[1], argv[2].replace("\\n", "\n"))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
