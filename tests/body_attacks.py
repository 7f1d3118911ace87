"""Oversized and slow request bodies sent the way an attacker would: raw sockets, chunked, bounded by the server.

Used by tests/test_control_limits.py against a real server process, and runnable by hand to measure a server:

    python -m tests.body_attacks PORT PID      # prints the peak RSS growth per attack
"""

from __future__ import annotations

import re
import select
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

CHUNK = 16 * 1024


@dataclass
class Outcome:
    status: int | None  # the HTTP status read back, None if the server closed without one we could read
    sent: int  # body bytes the server let us send before it answered or closed


def chunked_upload(port: int, path: str, headers: dict[str, str], total: int, piece: bytes = b"a") -> Outcome:
    """POST `total` bytes with Transfer-Encoding: chunked, stopping as soon as the server answers or closes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sent = 0
    chunk = (piece * (CHUNK // len(piece) + 1))[:CHUNK]
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    try:
        sock.sendall(head.encode())
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break  # the server answered early: stop sending, as a polite client would
            sock.sendall(frame)
            sent += len(chunk)
        else:
            sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server closed on us: what matters is what it kept
    return Outcome(_status(sock), sent)


def _status(sock: socket.socket) -> int | None:
    try:
        data = sock.recv(4096)
    except OSError:
        return None
    finally:
        sock.close()
    match = re.match(rb"HTTP/1\.1 (\d{3})", data)
    return int(match.group(1)) if match else None


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


ATTACKS = {
    "300 MB chunked urlencoded to /status/x, bogus signature": (
        "/status/x",
        {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "bogus"},
        300 * 2**20,
    ),
    "300 MB chunked multipart file to /incoming": (
        "/incoming",
        {"Content-Type": "multipart/form-data; boundary=zz", "X-Twilio-Signature": "bogus"},
        300 * 2**20,
    ),
    "200 MB chunked JSON to /make-call (valid key)": ("/make-call", {"Content-Type": "application/json"}, 200 * 2**20),
}


def main() -> None:
    port, pid = int(sys.argv[1]), int(sys.argv[2])
    auth = {"Authorization": f"Bearer {sys.argv[3]}"} if len(sys.argv) > 3 else {}
    for name, (path, headers, total) in ATTACKS.items():
        before = peak_rss_kib(pid)
        outcome = chunked_upload(port, path, {**headers, **(auth if path == "/make-call" else {})}, total)
        grew = (peak_rss_kib(pid) - before) / 1024
        print(f"{name}: status {outcome.status}, {outcome.sent / 2**20:.1f} MiB sent, peak RSS +{grew:.1f} MiB")


if __name__ == "__main__":
    main()
