"""`python -m edge` = the `oido-edge` console script."""

import sys

from edge.cli import main

sys.exit(main())
