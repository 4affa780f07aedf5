"""A provider that prints: the stand-in whose terminal the output tests watch.

Started by the host daemon in tmux like ``claude``; approval flags are
ignored, and the prompt (the last argument) says what to print:

- ``tick SECONDS``: a coloured ``tick N <epoch seconds>`` line every SECONDS;
- ``burst BYTES``: BYTES of coloured text at once, then one ``tick`` line a second.

Each line ends with the epoch time it was printed, so a viewer can measure
how long it took to arrive. Standard library only.
"""

from __future__ import annotations

import sys
import time


def main() -> None:
    words = sys.argv[-1].split() if len(sys.argv) > 1 else []
    if len(words) != 2 or words[0] not in ("tick", "burst"):
        words = ["tick", "0.2"]  # no prompt: the last argument is an approval flag
    mode, amount = words
    out = sys.stdout
    out.write("\x1b[1;32mprinter ready\x1b[0m\n")
    out.flush()
    every = 1.0
    if mode == "burst":
        line = "\x1b[33m" + "x" * 70 + "\x1b[0m\n"
        written = 0
        while written < int(amount):
            out.write(line)
            written += len(line)
        out.flush()
    else:
        every = float(amount)
    n = 0
    while True:
        n += 1
        out.write(f"\x1b[36mtick {n}\x1b[0m {time.time():.6f}\n")
        out.flush()
        time.sleep(every)  # the program's own pace, not test synchronisation


if __name__ == "__main__":
    main()
