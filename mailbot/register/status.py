"""The statuses of a request (the vocabulary; ``workflow/states.py`` is the machine)."""
from __future__ import annotations

import enum


class Status(str, enum.Enum):
    NEW = "new"
    AWAITING_CONTACT_INFO = "awaiting_contact_info"  # company and ФИО asked for
    OPEN = "open"
    AWAITING_CUSTOMER = "awaiting_customer"  # answered; the customer's turn
    ESCALATED_OP4 = "escalated_op4"
    RESOLVED = "resolved"  # solution sent, awaiting the customer's confirmation
    CLOSED = "closed"
    REJECTED = "rejected"  # no active support contract (staff may override)
