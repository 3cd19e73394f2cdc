"""``python -m sessionpool.server``: the same as ``sessionpool serve``."""

import sys

from sessionpool.server.cli import main

sys.exit(main())
