"""The ``mailbot`` command line and the operator's commands behind it."""
