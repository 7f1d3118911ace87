"""Oversized and slow request bodies sent the way an attacker would: raw sockets, chunked, bounded by the server.

Used by tests/test_control_limits.py against a real server process, and runnable by hand to measure a server:

    python -m tests.body_attacks PORT PID API_KEY TMPDIR   # peak RSS growth and temp files per attack
"""

from __future__ import annotations

import os
import re
import select
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

CHUNK = 16 * 1024


@dataclass
class Outcome:
    status: int | None  # the HTTP status read back, None if the server closed without one we could read
    sent: int  # body bytes the server let us send before it answered or closed


def chunked_upload(
    port: int, path: str, headers: dict[str, str], total: int, prefix: bytes = b"", filler: bytes = b"a"
) -> Outcome:
    """POST `prefix` then `filler` up to `total` bytes, Transfer-Encoding: chunked, stopping as soon as the server
    answers or closes (the shapes parsers accept: one endless urlencoded field, one endless file part)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sent = 0
    chunk = (filler * (CHUNK // len(filler) + 1))[:CHUNK]
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    try:
        sock.sendall(head.encode() + (f"{len(prefix):x}\r\n".encode() + prefix + b"\r\n" if prefix else b""))
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


_FILE_PART = b'--zz\r\nContent-Disposition: form-data; name="f"; filename="x"\r\nContent-Type: text/plain\r\n\r\n'


# name: (path, headers, bytes, prefix) -- the body is `prefix` then b"a" repeated
class DiskWatch:
    """The largest total size of the temp files a process holds under `path` while the watch runs (sampled every
    20 ms): named files, and the unnamed ones (O_TMPFILE, or deleted while open) seen through /proc/PID/fd."""

    def __init__(self, path: Path, pid: int) -> None:
        self.path, self.pid, self.peak = path, pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _size(self) -> int:
        seen: dict[int, int] = {}
        for root, _, files in os.walk(self.path):
            for name in files:
                try:
                    info = os.stat(os.path.join(root, name))
                    seen[info.st_ino] = info.st_size
                except OSError:
                    pass  # deleted between listing and stat
        fd_dir = Path(f"/proc/{self.pid}/fd")
        for fd in fd_dir.iterdir() if fd_dir.exists() else ():
            try:
                if os.readlink(fd).startswith(str(self.path)):
                    info = os.stat(fd)
                    seen[info.st_ino] = info.st_size
            except OSError:
                pass  # closed meanwhile
        return sum(seen.values())

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._size())

    def __enter__(self) -> DiskWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._size())


ATTACKS = {
    "300 MB chunked urlencoded to /status/x, bogus signature": (
        "/status/x",
        {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "bogus"},
        300 * 2**20,
        b"CallSid=",
    ),
    "300 MB chunked multipart file to /incoming": (
        "/incoming",
        {"Content-Type": "multipart/form-data; boundary=zz", "X-Twilio-Signature": "bogus"},
        300 * 2**20,
        _FILE_PART,
    ),
    "200 MB chunked JSON to /make-call (valid key)": (
        "/make-call",
        {"Content-Type": "application/json"},
        200 * 2**20,
        b'{"destination_number": "+15551230000", "metadata": {"x": "',
    ),
}


def main() -> None:
    port, pid = int(sys.argv[1]), int(sys.argv[2])
    auth = {"Authorization": f"Bearer {sys.argv[3]}"} if len(sys.argv) > 3 else {}
    tmpdir = Path(sys.argv[4]) if len(sys.argv) > 4 else Path("/tmp")
    for name, (path, headers, total, prefix) in ATTACKS.items():
        before = peak_rss_kib(pid)
        with DiskWatch(tmpdir, pid) as disk:
            outcome = chunked_upload(port, path, {**headers, **(auth if path == "/make-call" else {})}, total, prefix)
        grew = (peak_rss_kib(pid) - before) / 1024
        print(
            f"{name}: status {outcome.status}, {outcome.sent / 2**20:.1f} MiB sent, peak RSS +{grew:.1f} MiB, "
            f"temp files up to {disk.peak / 2**20:.1f} MiB"
        )


if __name__ == "__main__":
    main()
