"""`python -m edge` = the `oido-edge` console script."""

import os
import signal
import sys


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# A service manager may send SIGTERM while Python is still importing: stop cleanly (exit 0)
# instead of dying by the signal. main() installs the same handler, then the commands their own.
signal.signal(signal.SIGTERM, _interrupt)
try:
    from edge.cli import main

    status = main()
except KeyboardInterrupt:  # while importing edge.cli: exit 0 ourselves (see edge.cli.exit_now)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
sys.exit(status)
