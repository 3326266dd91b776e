"""``python -m keyrotd.cli``: what the ``keyrotd`` console script runs."""

import sys

from keyrotd.cli import main

sys.exit(main())
