import os
import sys

try:
    from .cli.commands import run
except KeyboardInterrupt:  # Ctrl-C while loading the libraries: nothing was started, nothing written
    sys.stderr.flush()
    os._exit(130)  # not sys.exit: see cli.run

run()
