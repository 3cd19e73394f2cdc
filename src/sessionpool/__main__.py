import sys

from sessionpool.cli import main

sys.exit(main())
