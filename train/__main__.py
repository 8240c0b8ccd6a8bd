"""`python -m train`: the same as `oido-train`."""

import sys

from train.cli import main

sys.exit(main())
