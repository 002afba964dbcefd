"""Run a command and print a line whenever it has been silent for a while.

``make demo`` wraps pip in it: pip prints nothing while it unpacks large wheels
(torch and its CUDA libraries take minutes on a slow disk), and a terminal that
stays silent for a minute looks hung.

    python scripts/heartbeat.py [--every SECONDS] -- COMMAND [ARGS...]

The command's output passes through unchanged (stdout and stderr merged); its
exit status is this script's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time


def main(argv: list[str] | None = None) -> int:
    """Run the command after ``--``, echoing its output and a heartbeat line after each silent stretch."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=float, default=8.0, help="seconds of silence before a heartbeat line")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("expected a command after --")
    start = last = time.monotonic()
    lock = threading.Lock()
    done = threading.Event()

    def beat() -> None:
        nonlocal last
        while not done.wait(1.0):
            with lock:
                now = time.monotonic()
                if now - last >= args.every:
                    sys.stdout.write(f"  ... still working ({now - start:.0f}s)\n")
                    sys.stdout.flush()
                    last = now

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    threading.Thread(target=beat, daemon=True).start()
    assert proc.stdout is not None
    for chunk in iter(lambda: proc.stdout.read1(4096), b""):  # type: ignore[union-attr]
        with lock:
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            last = time.monotonic()
    done.set()
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
