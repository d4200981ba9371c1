"""The SLA clock: the working calendar and deadlines, what is near or overdue, the SLA report."""
