"""``python -m sessionpool.server``: the same as ``sessionpool serve``."""

import sys

from sessionpool.cli import main

sys.exit(main(["serve", *sys.argv[1:]]))
