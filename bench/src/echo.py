"""The floor's Python hop: writes each line read on stdin back to stdout, one at a time.

Run as `python3 -u -c <this script>`. It does no parsing and no logic: the least a Python worker
on a pipe can do, to compare stubnet's worker against.
"""

import sys


def main():
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        out.write(line)
        out.flush()


main()
