"""``python -m bigvolume`` and the installed ``bigvolume`` command (pyproject.toml's script)."""
import os
import signal


def _interrupted_while_loading(signum, _frame) -> None:
    # Nothing has started yet: say so as cli.commands.main does, and end (130 after Ctrl-C, 143 after SIGTERM; not
    # by the signal, which a SIGTERM while loading did, without a word)
    word, code = (b"terminated", 143) if signum == signal.SIGTERM else (b"interrupted", 130)
    os.write(2, b"\nbigvolume: " + word + b"; nothing written\n")
    os._exit(code)


_interrupted_while_loading.bigvolume_loading = True  # cli.commands.main hands both back to its own handling


def main() -> None:
    """Load the command line (numpy, the operations, the parser: a few tenths of a second) and run it. Ctrl-C
    meanwhile ends the process by this handler: a KeyboardInterrupt raised inside an import can come out as another
    exception, or as a traceback before any of our handling exists. cli.commands.main restores Python's handler
    once its own handling is in place (after parsing the arguments)."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when started with SIGINT ignored
        signal.signal(signal.SIGINT, _interrupted_while_loading)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupted_while_loading)
    from .cli.commands import run
    run()


if __name__ == "__main__":
    main()
