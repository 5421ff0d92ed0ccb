"""``python -m bigvolume`` and the installed ``bigvolume`` command (pyproject.toml's script)."""
import os
import signal


def _interrupted_while_loading(_signum, _frame) -> None:
    # Nothing has started yet: say so as cli.commands.main does, and end (130, as after any Ctrl-C; not by SIGINT).
    os.write(2, b"\nbigvolume: interrupted; nothing written\n")
    os._exit(130)


_interrupted_while_loading.bigvolume_loading = True  # cli.commands.main hands Ctrl-C back to Python once it can


def main() -> None:
    """Load the command line (numpy, the operations, the parser: a few tenths of a second) and run it. Ctrl-C
    meanwhile ends the process by this handler: a KeyboardInterrupt raised inside an import can come out as another
    exception, or as a traceback before any of our handling exists. cli.commands.main restores Python's handler
    once its own handling is in place (after parsing the arguments)."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when started with SIGINT ignored
        signal.signal(signal.SIGINT, _interrupted_while_loading)
    from .cli.commands import run
    run()


if __name__ == "__main__":
    main()
