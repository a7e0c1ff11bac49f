"""The worker's Prometheus metrics: queue, batches, images, result memory, replicas and HTTP requests,
then the latency histograms of inference/histograms.py."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from inference.protocol import ReplicaStats
from inference.scheduler import Scheduler


def render_metrics(scheduler: Scheduler, http: Counter[tuple[str, str, int]]) -> str:
    """Prometheus text exposition format (0.0.4), written by hand to need no extra package."""
    s = scheduler.stats()
    out: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: Sequence[tuple[str, float]]) -> None:
        out.append(f"# HELP brushfire_{name} {help_}")
        out.append(f"# TYPE brushfire_{name} {kind}")
        out.extend(f"brushfire_{name}{labels} {value:g}" for labels, value in samples)

    lanes = list(s.lanes.items())
    metric("queue_depth", "gauge", "Jobs queued per lane.", [(f'{{lane="{n}"}}', v.queued) for n, v in lanes])
    metric("queue_users", "gauge", "Users with queued jobs per lane.", [(f'{{lane="{n}"}}', v.users) for n, v in lanes])  # fmt: skip
    metric("running_jobs", "gauge", "Jobs in the batch in flight.", [("", s.running)])
    metric("batch_images", "gauge", "Images in the batch in flight.", [("", s.batch_size)])
    metric("images_per_second", "gauge", "Images made per second over the last minute.", [("", s.images_per_s_1m)])  # fmt: skip
    jobs = [(f'{{status="{st}"}}', n) for st, n in scheduler.counters.items() if st.is_final]
    metric("jobs_total", "counter", "Jobs finished, by final status.", jobs)
    metric("images_total", "counter", "Images made.", [("", scheduler.images_total)])
    metric("batches_total", "counter", "Pipeline calls made.", [("", scheduler.batches)])
    metric("batch_seconds_total", "counter", "Seconds spent in pipeline calls.", [("", scheduler.batch_seconds)])  # fmt: skip
    metric("accepting", "gauge", "1 while the worker takes new jobs.", [("", float(s.accepting))])
    results = scheduler.results
    metric(
        "result_bytes",
        "gauge",
        "Bytes of finished pictures held for clients to fetch.",
        [("", results.bytes)],
    )
    metric("result_budget_bytes", "gauge", "The most bytes of finished pictures held.", [("", results.budget_bytes)])  # fmt: skip
    metric("results_dropped_unfetched_total", "counter", "Pictures dropped from a full budget before any fetch.", [("", results.dropped_unfetched)])  # fmt: skip
    if s.replicas:
        _replica_metrics(metric, s.replicas)
    counters = engine_counters(scheduler.engine)
    if counters:
        metric("prompt_cache_hits_total", "counter", "Prompts whose embeddings came from the cache.", [("", counters["prompt_cache_hits"])])  # fmt: skip
        metric("prompt_cache_misses_total", "counter", "Prompts encoded for the cache.", [("", counters["prompt_cache_misses"])])  # fmt: skip
        metric("prompt_cache_entries", "gauge", "Encoded prompts held.", [("", counters["prompt_cache_entries"])])  # fmt: skip
        metric("prompt_cache_bytes", "gauge", "Bytes of encoded prompts held.", [("", counters["prompt_cache_bytes"])])  # fmt: skip
        metric("padded_rows_total", "counter", "Batch rows added to reach a batch-size bucket, computed and dropped.", [("", counters["padded_rows"])])  # fmt: skip
    if s.device_memory_bytes is not None:
        metric("device_memory_bytes", "gauge", "Device memory in use.", [("", s.device_memory_bytes)])
    requests = [
        (f'{{method="{m}",route="{_escape(r)}",status="{st}"}}', n) for (m, r, st), n in sorted(http.items())
    ]
    metric("http_requests_total", "counter", "HTTP requests answered.", requests)
    return "\n".join(out) + "\n" + scheduler.histograms.render()


def engine_counters(engine: object) -> dict[str, float]:
    """The speed switches' counters (`acceleration_counters`), summed over a model set's engines; empty
    for an engine without them (a remote or bench engine)."""
    engines = [engine, getattr(engine, "inner", None), *getattr(engine, "extras", {}).values()]
    total: dict[str, float] = {}
    for one in engines:
        for name, value in getattr(one, "acceleration_counters", {}).items():
            total[name] = total.get(name, 0) + value
    return total


def _replica_metrics(
    metric: Callable[[str, str, str, Sequence[tuple[str, float]]], None], replicas: list[ReplicaStats]
) -> None:
    """Per-replica gauges and counters, on an ingress that fans batches out to replicas (Ray Serve)."""

    def each(value: Callable[[ReplicaStats], float]) -> list[tuple[str, float]]:
        return [(f'{{replica="{_escape(r.id)}"}}', value(r)) for r in replicas]

    metric("replica_up", "gauge", "1 while the replica is alive.", each(lambda r: float(r.alive)))
    metric("replica_in_flight", "gauge", "Batches the replica is running.", each(lambda r: r.in_flight))
    metric("replica_batches_total", "counter", "Batches the replica finished.", each(lambda r: r.batches))
    metric("replica_images_total", "counter", "Images the replica made.", each(lambda r: r.images))
    metric("replica_busy_seconds_total", "counter", "Seconds the replica spent on batches.", each(lambda r: r.busy_seconds))  # fmt: skip
    metric("replica_images_per_second", "gauge", "Images per second over the last minute.", each(lambda r: r.images_per_s_1m))  # fmt: skip
    metric("replica_failures_total", "counter", "Batches lost or failed on the replica.", each(lambda r: r.failures))  # fmt: skip


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
