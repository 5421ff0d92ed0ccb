import sys

try:
    from .cli.commands import main
except KeyboardInterrupt:  # Ctrl-C while loading the libraries: nothing was started, nothing written
    sys.exit(130)

sys.exit(main())
