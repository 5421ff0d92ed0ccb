import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while loading the libraries: nothing was started, nothing written
    sys.exit(130)

sys.exit(main())
