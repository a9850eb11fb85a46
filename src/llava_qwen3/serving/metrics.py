"""The server's Prometheus metrics, in a registry of its own (so two apps in one process do not collide)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PREFIX = "llava_qwen3"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServerMetrics:
    """Requests by route and status, their latency, tokens in (and of those, read from the prefix cache) and out,
    generations by finish reason, batch sizes and the queue's depth."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            f"{PREFIX}_requests",
            "HTTP requests answered, by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            f"{PREFIX}_request_seconds",
            "seconds from a request's arrival to the end of its answer, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(f"{PREFIX}_prompt_tokens", "prompt tokens decoded", registry=self.registry)
        self.cached_prompt_tokens = Counter(
            f"{PREFIX}_cached_prompt_tokens", "prompt tokens read from the prefix cache", registry=self.registry
        )
        self.completion_tokens = Counter(f"{PREFIX}_completion_tokens", "tokens generated", registry=self.registry)
        self.generations = Counter(
            f"{PREFIX}_generations", "generations finished, by finish reason", ["finish_reason"], registry=self.registry
        )
        self.batch_size = Histogram(
            f"{PREFIX}_batch_size",
            "requests decoded together in one batch",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(f"{PREFIX}_queue_depth", "requests waiting for the model", registry=self.registry)

    def watch_queue(self, depth: Callable[[], int]) -> None:
        """Reads the queue depth from `depth` whenever the metrics are scraped."""
        self.queue_depth.set_function(depth)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
