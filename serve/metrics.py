"""Prometheus metrics of `nim4-edge serve` (GET /metrics), on prometheus_client's own registry (not
the process-global one, so two servers in one process do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# seconds; finals of the demo model on a 2-core CPU take 0.05-0.5 s, a full-size decoder up to seconds
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """What an operator watches: streams, utterances, errors, latencies. Thread-safe (the client's
    metric types lock)."""

    def __init__(self, active_streams, max_streams: int):
        self.registry = CollectorRegistry()
        Gauge("nim4_active_streams", "streams being served now", registry=self.registry).set_function(active_streams)
        Gauge("nim4_max_streams", "streams served at once at most (--max-streams)",
              registry=self.registry).set(max_streams)
        self.streams = Counter("nim4_streams", "streams (calls, uploads) accepted", ["protocol"], registry=self.registry)
        self.refused = Counter("nim4_streams_refused", "streams refused: all slots in use", ["protocol"],
                               registry=self.registry)
        self.utterances = Counter("nim4_utterances", "finals delivered", ["protocol"], registry=self.registry)
        self.errors = Counter("nim4_errors", "calls answered with an error, by status", ["protocol", "status"],
                              registry=self.registry)
        self.audio_seconds = Counter("nim4_audio_seconds", "audio received, in seconds", ["protocol"],
                                     registry=self.registry)
        self.final_latency = Histogram("nim4_final_latency_seconds", "endpoint (end of speech detected) to final text",
                                       buckets=LATENCY_BUCKETS, registry=self.registry)
        self.turns = Counter("nim4_turns", "finals by why their turn ended (eos-predicted, silence, max-length, "
                             "end-of-input)", ["protocol", "reason"], registry=self.registry)
        self.partial_latency = Histogram("nim4_partial_latency_seconds",
                                         "audio message received to the partial it completed",
                                         buckets=LATENCY_BUCKETS, registry=self.registry)

    def final(self, protocol: str, latency_ms: float | None, end_reason: str = "") -> None:
        self.utterances.labels(protocol).inc()
        self.turns.labels(protocol, end_reason or "unknown").inc()
        if latency_ms is not None:
            self.final_latency.observe(latency_ms / 1000)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
