"""The bot's Prometheus metrics: latency histograms for each stage a member waits through.

One `BotMetrics` per bot (its own CollectorRegistry, no process-wide globals), so two bots in one
process (tests) never share counts. `/metrics` on the bot's metrics port renders `registry`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Seconds: a defer is meant to take well under Discord's 3 s; a generation may take minutes.
FAST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)
SLOW_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class BotMetrics:
    """Histograms of the four waits of a job: defer, queue wait, generation and delivery."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.defer = Histogram(
            "brushfire_bot_defer_seconds",
            "From the interaction's creation to its deferral (Discord allows 3 s)",
            buckets=FAST_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "brushfire_bot_queue_wait_seconds",
            "From a job's submission to the worker starting it",
            buckets=SLOW_BUCKETS,
            registry=self.registry,
        )
        self.generation = Histogram(
            "brushfire_bot_generation_seconds",
            "From the worker starting a job to its images being ready",
            buckets=SLOW_BUCKETS,
            registry=self.registry,
        )
        self.delivery = Histogram(
            "brushfire_bot_delivery_seconds",
            "From a job's outcome to its message being posted",
            buckets=FAST_BUCKETS,
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)
