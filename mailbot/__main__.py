"""``python -m mailbot …`` is the ``mailbot`` command."""
import sys

from mailbot.cli import main

sys.exit(main())
