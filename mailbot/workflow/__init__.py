"""Workflow: applies the rules' verdicts to the register.

Only this package changes a request's status (through ``states.change_status``),
and it writes the events and outbox rows in the same transaction.
"""
