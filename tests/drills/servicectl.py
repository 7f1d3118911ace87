"""`python -m tests.drills.servicectl SOCKET VERB COLOUR`: systemctl for the drills (see colour_services.py).

Prints the state for `state`, nothing otherwise (like systemctl); an error answer goes to stderr, exit 1.
"""

from __future__ import annotations

import socket
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: servicectl SOCKET VERB COLOUR", file=sys.stderr)
        return 2
    path, verb, colour = argv
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        sock.sendall(f"{verb} {colour}\n".encode())
        answer = sock.makefile("rb").readline().decode().strip()
    failed = answer.startswith("error") or not answer
    if failed or verb == "state":  # like systemctl: quiet unless asked for the state
        print(answer or "error: no answer", file=sys.stderr if failed else sys.stdout)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
