"""`python -m convert`: the same as oido-convert."""

import sys

from convert.cli import main

sys.exit(main())
