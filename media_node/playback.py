"""What the caller has actually heard, from Twilio's mark echoes; barge-in bookkeeping. Sans-I/O.

We send agent audio as 160-byte frames followed by a mark per chunk. Twilio echoes a mark when the audio
before it has played, or when `clear` discarded it; so on `clear` every pending mark moves to `cleared`, and a
late echo of a cleared mark counts for nothing. The played bytes of the current agent turn give the fraction
of it the caller heard, used to cut the transcript at barge-in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from media_node.audio import BYTES_PER_SECOND


@dataclass
class _Pending:
    name: str
    turn: int
    size: int


class PlaybackTracker:
    def __init__(self) -> None:
        self.turn = 0
        self._seq = 0
        self._pending: deque[_Pending] = deque()
        self._cleared: set[str] = set()
        self.sent_bytes = 0  # of the current turn
        self.played_bytes = 0  # of the current turn
        self.total_sent_bytes = 0
        self.total_played_bytes = 0

    def new_turn(self) -> None:
        self.turn += 1
        self.sent_bytes = self.played_bytes = 0

    def sent(self, size: int) -> str:
        """Record `size` bytes of agent audio just queued to Twilio; returns the mark name to send after them."""
        self._seq += 1
        name = f"t{self.turn}-{self._seq}"
        self._pending.append(_Pending(name, self.turn, size))
        self.sent_bytes += size
        self.total_sent_bytes += size
        return name

    def echoed(self, name: str) -> bool:
        """A mark came back. True if it meant audio was played (not cleared, not unknown)."""
        if name in self._cleared:
            self._cleared.discard(name)
            return False
        if not any(p.name == name for p in self._pending):
            return False
        while self._pending:  # Twilio plays in order: everything up to this mark has played
            done = self._pending.popleft()
            if done.turn == self.turn:
                self.played_bytes += done.size
            self.total_played_bytes += done.size
            if done.name == name:
                return True
        return True

    @property
    def playing(self) -> bool:
        """Audio sent to Twilio that it has not finished playing."""
        return bool(self._pending)

    @property
    def queued_ms(self) -> float:
        return sum(p.size for p in self._pending) * 1000 / BYTES_PER_SECOND

    def interrupt(self) -> bool:
        """Barge-in: everything pending is being cleared. True if there was audio to clear."""
        had_audio = bool(self._pending)
        self._cleared.update(p.name for p in self._pending)
        self._pending.clear()
        return had_audio

    def heard_fraction(self) -> float:
        """Share of the current turn's audio the caller heard (1.0 when nothing was sent)."""
        return 1.0 if self.sent_bytes == 0 else min(1.0, self.played_bytes / self.sent_bytes)


def cut_text(text: str, fraction: float) -> str:
    """The part of `text` the caller heard, to a word boundary; speech is roughly uniform in characters."""
    if fraction >= 1.0:
        return text
    keep = int(len(text) * max(0.0, fraction))
    head = text[:keep]
    if keep < len(text) and " " in head:
        head = head[: head.rfind(" ")]
    return head.rstrip(" ,;:") + "…" if head else ""
