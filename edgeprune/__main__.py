"""`python -m edgeprune ...`: the same entry point as the `edgeprune` script."""

import sys

from edgeprune.cli import main

sys.exit(main())
