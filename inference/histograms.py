"""The worker's latency histograms (Prometheus), one registry per scheduler: no process-wide globals.

`/metrics` writes the scheduler's gauges and counters by hand (inference/metrics.py) and appends these.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

# Seconds: a queue wait may be minutes under load; one pipeline call from well under a second to minutes.
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class WorkerHistograms:
    """How long jobs waited in the queue, and how long each pipeline call (batch) took."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.queue_wait = Histogram(
            "brushfire_queue_wait_seconds",
            "From a job's acceptance to its batch starting",
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.batch = Histogram(
            "brushfire_batch_seconds",
            "One pipeline call, start to end",
            buckets=BUCKETS,
            registry=self.registry,
        )

    def render(self) -> str:
        return generate_latest(self.registry).decode()
