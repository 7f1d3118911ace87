"""Per-key token bucket, sans-I/O (time passed in): keeps us under Twilio's default 1 call per second."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    rate_per_s: float = 1.0
    burst: float = 1.0
    _state: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (tokens, last time)

    def take(self, key: str, now: float) -> float:
        """0.0 if allowed (a token is spent), else the seconds to wait before trying again."""
        tokens, last = self._state.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate_per_s)
        if tokens >= 1.0:
            self._state[key] = (tokens - 1.0, now)
            return 0.0
        self._state[key] = (tokens, now)
        return (1.0 - tokens) / self.rate_per_s
