"""``python -m bigvolume`` and the installed ``bigvolume`` command (pyproject.toml's script)."""
import os
import signal


def _interrupted_while_loading(_signum, _frame) -> None:
    # Nothing has started yet: say so as cli.commands.main does, and end (130, as after any Ctrl-C; not by SIGINT).
    os.write(2, b"\nbigvolume: interrupted; nothing written\n")
    os._exit(130)


def main() -> None:
    """Load the command line (numpy, the operations: a few tenths of a second) and run it. Ctrl-C meanwhile ends
    the process by this handler: a KeyboardInterrupt raised inside an import can come out as another exception, or
    as a traceback before any of our handling exists."""
    default = signal.getsignal(signal.SIGINT) is signal.default_int_handler  # not when started with SIGINT ignored
    if default:
        signal.signal(signal.SIGINT, _interrupted_while_loading)
    from .cli.commands import run
    if default:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    run()


if __name__ == "__main__":
    main()
