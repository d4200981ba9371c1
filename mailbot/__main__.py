"""``python -m mailbot …`` is the ``mailbot`` command."""
import sys

from mailbot.cli.main import main

sys.exit(main())
