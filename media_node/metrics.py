"""Prometheus metrics of one media node, in its own registry (tests can run several nodes in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class MediaMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active_calls = Gauge("voice_active_calls", "Calls being bridged now", registry=r)
        self.pending_streams = Gauge(
            "voice_pending_streams", "Sockets accepted that have not shown a valid start yet", registry=r
        )
        self.store_writes_lost = Counter(
            "voice_store_writes_lost", "Call record writes given up (store failing too long, or call gone)", registry=r
        )
        self.calls = Counter(
            "voice_calls_total", "Streams by outcome (call_phase.CallOutcome)", ["outcome"], registry=r
        )
        self.rejected = Counter("voice_streams_rejected_total", "Streams refused, by reason", ["reason"], registry=r)
        self.gemini_connect = Histogram(
            "voice_gemini_connect_seconds", "WebSocket open + setupComplete", buckets=LATENCY_BUCKETS, registry=r
        )
        self.first_audio = Histogram(
            "voice_first_audio_seconds", "Twilio start to first agent audio sent", buckets=LATENCY_BUCKETS, registry=r
        )
        self.barge_ins = Counter("voice_barge_ins_total", "Agent turns cut by the caller", registry=r)
        self.frame_errors = Counter("voice_frame_errors_total", "Malformed frames, by side", ["side"], registry=r)
        self.reconnects = Counter("voice_gemini_reconnects_total", "Gemini sessions re-opened mid-call", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
