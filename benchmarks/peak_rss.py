"""Run a command; print one JSON line: its exit code, wall seconds and its own peak RSS (KiB, ru_maxrss).

Why a wrapper: Linux credits an exec'd child with the peak RSS of the process it was forked (or vforked, as
Python's subprocess does) from, up to the exec. A benchmark parent that has held volumes would inflate every
child's ru_maxrss to its own peak. This stdlib-only process stays small, so the number is the command's own.

Usage: python peak_rss.py LOG -- COMMAND [ARGS...]   (the command's stdout and stderr go to LOG)
"""
import json
import os
import subprocess
import sys
import time


def main() -> int:
    log, separator, *command = sys.argv[1:]
    if separator != "--" or not command:
        raise SystemExit(__doc__)
    with open(log, "w") as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here; tell Popen so it does not wait again
    print(json.dumps({"returncode": process.returncode, "seconds": seconds, "peak_kib": usage.ru_maxrss}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
