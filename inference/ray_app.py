"""Serve the worker's `/v1` RPC from many GPUs and machines on Ray Serve (the optional `ray` extra).

Two deployments make one application:

- `ModelReplica`: one replica per GPU, each running the same `DiffusersEngine` as the standalone worker.
  A batch is a streaming call: the replica yields step updates (with previews, paced at the ingress's
  progress interval) and then the images.
- `Ingress`: a single replica that runs the standalone worker's own aiohttp app (`start_worker`, so the
  same validation, error codes and fair two-lane scheduler) on its own port. Its engine is a `RayEngine`,
  which hands each batch the scheduler forms to whichever model replica is free and streams progress back.

Ray Serve's HTTP proxy is not used for `/v1`: the RPC streams NDJSON events and takes multipart uploads,
and keeping the very aiohttp handlers is what guarantees one implementation of the protocol.

About 580 lines, kept in one module on purpose: it is imported only with the optional `ray` extra, and
its two deployments share the replica message types and the lost-replica handling they are tested by.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, cast

import ray
from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from inference.engine_api import (
    BatchItem,
    DeviceMemory,
    Engine,
    EngineError,
    EngineOutOfMemory,
    GeneratedImage,
    KindDefaults,
    StepUpdate,
    kind_defaults,
)
from inference.protocol import ReplicaStats
from inference.server import RunningWorker, check_bind, start_worker
from inference.settings import EngineSettings, ModelDefaults, WorkerSettings
from inference.vocabulary import JobKind

log = logging.getLogger(__name__)

APP_NAME = "brushfire"
INGRESS_NAME = "Ingress"
MODEL_NAME = "ModelReplica"
ATTEMPTS = 2  # a batch whose replica dies is run once more on another replica, then fails
_RATE_WINDOW_S = 60.0
PROBE_TIMEOUT_S = 5.0


class RayClusterUnreachable(RuntimeError):
    """The Ray cluster named by `--address` could not be joined."""


class ReplicaLost(EngineError):
    """A model replica died during a batch and the retry on another replica failed too."""


class RayScaleSettings(BaseModel):
    """How many model replicas to run and what each one gets.

    With `min_replicas == max_replicas` the replica count is fixed; otherwise Ray Serve autoscales
    between them, adding a replica while more than `target_queue_per_replica` batches wait or run per
    replica. The ingress keeps `max_replicas` batches in flight so that the autoscaler sees the demand.
    """

    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(default=1, ge=1, le=512)
    max_replicas: int = Field(default=1, ge=1, le=512)
    target_queue_per_replica: float = Field(default=1.0, gt=0.0, le=16.0)
    num_gpus: float = Field(default=1.0, ge=0.0, le=8.0)  # per model replica; 0 on a CPU-only cluster
    num_cpus: float = Field(default=1.0, gt=0.0, le=64.0)  # per model replica; fractional in tests
    upscale_delay_s: float = Field(default=30.0, ge=0.0)
    downscale_delay_s: float = Field(default=600.0, ge=0.0)

    @model_validator(mode="after")
    def _order(self) -> RayScaleSettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} is over max_replicas {self.max_replicas}")
        return self

    @classmethod
    def fixed(cls, replicas: int, **fields: Any) -> RayScaleSettings:
        return cls(min_replicas=replicas, max_replicas=replicas, **fields)

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas != self.max_replicas


# --- what crosses from a model replica to the ingress ---


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """A model replica's identity and the loaded model's fixed facts."""

    replica: str  # Serve's unique replica id
    actor_name: str  # the replica's Ray actor name, e.g. for `ray.kill` in tests
    model_name: str
    device_name: str
    adapter_names: list[str]
    defaults: dict[JobKind, KindDefaults]
    model_defaults: ModelDefaults
    has_edit_model: bool
    served_models: dict[str, ModelDefaults]
    # Each served model's upscaler factor (its `defaults(UPSCALE, model).scale`).
    upscale_scales: dict[str, int] = field(default_factory=dict)
    can_inpaint: bool = False


@dataclass(frozen=True, slots=True)
class StepMessage:
    replica: str
    update: StepUpdate


@dataclass(frozen=True, slots=True)
class BatchDone:
    replica: str
    images: list[list[GeneratedImage]]
    seconds: float
    memory: DeviceMemory


@dataclass(frozen=True, slots=True)
class BatchFailed:
    replica: str
    out_of_memory: bool
    message: str


ReplicaMessage = StepMessage | BatchDone | BatchFailed


# --- the model deployment ---


class ModelReplica:
    """One model replica: loads the engine once, runs one batch at a time, streams its steps."""

    def __init__(self, settings: EngineSettings) -> None:
        from inference.models import load_engine  # torch only where a model really loads

        self._engine: Engine = load_engine(settings)
        context = serve.get_replica_context()
        self._replica = context.replica_id.unique_id
        self._actor_name = context.replica_id.to_full_id_str()
        # A cancelled batch keeps its thread until the pipeline's next step; the next batch waits for it.
        self._busy = threading.Lock()
        log.info("model replica %s loaded %s", self._replica, self._engine.model_name)

    def describe(self) -> ReplicaInfo:
        e = self._engine
        return ReplicaInfo(
            replica=self._replica, actor_name=self._actor_name, model_name=e.model_name,
            device_name=e.device_name, adapter_names=list(e.adapter_names),
            defaults={kind: e.defaults(kind) for kind in JobKind}, model_defaults=e.model_defaults,
            has_edit_model=e.has_edit_model, served_models=e.served_models, can_inpaint=e.can_inpaint,
            upscale_scales={
                name: e.defaults(JobKind.UPSCALE, None if name == e.model_name else name).scale
                for name in e.served_models
            },
        )  # fmt: skip

    async def run(
        self, items: list[BatchItem], progress_interval_s: float = 0.0
    ) -> AsyncIterator[ReplicaMessage]:
        """Run one batch, yielding `StepMessage`s, then `BatchDone` or `BatchFailed`.

        Steps are sent at most every `progress_interval_s` (the ingress's own pacing, so nothing is sent
        that it would drop). Cancelling the call (the ingress does when every job of the batch was
        cancelled) stops the pipeline at its next step.
        """
        loop = asyncio.get_running_loop()
        steps: asyncio.Queue[StepUpdate] = asyncio.Queue()
        stop = threading.Event()
        started = sent = time.monotonic()

        def on_step(update: StepUpdate) -> None:  # on the engine thread
            nonlocal sent
            now = time.monotonic()
            if now - sent < progress_interval_s:
                return
            sent = now
            loop.call_soon_threadsafe(steps.put_nowait, update)

        work = asyncio.ensure_future(asyncio.to_thread(self._run_locked, items, on_step, stop))
        try:
            async for update in _drain(steps, work):
                yield StepMessage(self._replica, update)
            yield self._outcome(work, time.monotonic() - started)
        finally:
            stop.set()

    def _run_locked(
        self, items: list[BatchItem], on_step: Callable[[StepUpdate], None], stop: threading.Event
    ) -> list[list[GeneratedImage]]:
        with self._busy:
            return self._engine.run_batch(items, on_step, stop.is_set)

    def _outcome(self, work: asyncio.Future[list[list[GeneratedImage]]], seconds: float) -> ReplicaMessage:
        exc = work.exception()
        if exc is None:
            return BatchDone(self._replica, work.result(), seconds, self._engine.memory())
        if not isinstance(exc, EngineError | EngineOutOfMemory):
            log.error("batch failed on replica %s", self._replica, exc_info=exc)
        message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, EngineOutOfMemory) else str(exc)
        return BatchFailed(self._replica, isinstance(exc, EngineOutOfMemory), message)


async def _drain(steps: asyncio.Queue[StepUpdate], work: asyncio.Future[Any]) -> AsyncIterator[StepUpdate]:
    """The queued step updates until `work` is done, then any left."""
    while not work.done():
        getter = asyncio.ensure_future(steps.get())
        await asyncio.wait({getter, work}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            yield getter.result()
        else:
            getter.cancel()
    while not steps.empty():
        yield steps.get_nowait()


# --- the ingress side: an Engine whose batches run on the model replicas ---


@dataclass(slots=True)
class _ReplicaLoad:
    in_flight: int = 0
    batches: int = 0
    images: int = 0
    busy_seconds: float = 0.0
    failures: int = 0
    lost: bool = False
    memory: DeviceMemory = field(default_factory=DeviceMemory)
    recent: deque[tuple[float, int]] = field(default_factory=deque)  # (monotonic time, images) per batch


class ReplicaBook:
    """Per-replica accounting, written from the scheduler's engine threads and read on the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loads: dict[str, _ReplicaLoad] = {}

    def started(self, replica: str) -> None:
        with self._lock:
            self._loads.setdefault(replica, _ReplicaLoad()).in_flight += 1

    def ended(self, replica: str) -> None:
        with self._lock:
            self._loads[replica].in_flight -= 1

    def done(self, replica: str, message: BatchDone, images: int) -> None:
        with self._lock:
            load = self._loads[replica]
            load.batches += 1
            load.images += images
            load.busy_seconds += message.seconds
            load.memory = message.memory
            load.recent.append((time.monotonic(), images))

    def failed(self, replica: str, *, lost: bool) -> None:
        with self._lock:
            load = self._loads[replica]
            load.failures += 1
            load.lost = load.lost or lost

    def memory(self) -> DeviceMemory:
        """Device memory summed over the live replicas that reported it with their last batch."""
        with self._lock:
            reports = [
                ld.memory for ld in self._loads.values() if not ld.lost and ld.memory.total is not None
            ]
        if not reports:
            return DeviceMemory()
        return DeviceMemory(sum(m.used or 0 for m in reports), sum(m.total or 0 for m in reports))

    def stats(self) -> list[ReplicaStats]:
        cutoff = time.monotonic() - _RATE_WINDOW_S
        with self._lock:
            for load in self._loads.values():
                while load.recent and load.recent[0][0] < cutoff:
                    load.recent.popleft()
            return [
                ReplicaStats(
                    id=replica, alive=not load.lost, in_flight=load.in_flight, batches=load.batches,
                    images=load.images, busy_seconds=round(load.busy_seconds, 3), failures=load.failures,
                    images_per_s_1m=round(sum(n for _, n in load.recent) / _RATE_WINDOW_S, 3),
                )
                for replica, load in sorted(self._loads.items())
            ]  # fmt: skip


class RayEngine:
    """The `Engine` the ingress's scheduler drives: each `run_batch` is a streaming call to a replica.

    Ray Serve routes the call to a free replica (each takes one batch at a time). A replica that dies
    mid-batch is reported lost and the batch is run once more, with the same items (job ids, idempotency
    keys, seeds), on another replica; if that fails too the batch fails with `ReplicaLost`.
    """

    def __init__(
        self, handle: DeploymentHandle[Any], info: ReplicaInfo, progress_interval_s: float = 0.0
    ) -> None:
        self._handle = handle.options(stream=True)
        self._info = info
        self._progress_interval_s = progress_interval_s  # the scheduler's pacing, applied at the source
        self._book = ReplicaBook()
        self.retries = 0

    @classmethod
    async def connect(cls, handle: DeploymentHandle[Any], progress_interval_s: float = 0.0) -> RayEngine:
        """Ask one replica what it serves (waiting for the deployment to come up)."""
        info: ReplicaInfo = await handle.describe.remote()
        return cls(handle, info, progress_interval_s)

    @classmethod
    def connect_sync(cls, handle: DeploymentHandle[Any], progress_interval_s: float = 0.0) -> RayEngine:
        """`connect` for callers outside an event loop."""
        return cls(handle, handle.describe.remote().result(), progress_interval_s)

    @property
    def model_name(self) -> str:
        return self._info.model_name

    @property
    def device_name(self) -> str:
        return f"ray:{self._info.device_name}"

    @property
    def adapter_names(self) -> list[str]:
        return self._info.adapter_names

    @property
    def model_defaults(self) -> ModelDefaults:
        return self._info.model_defaults.model_copy()

    @property
    def has_edit_model(self) -> bool:
        return self._info.has_edit_model

    @property
    def can_inpaint(self) -> bool:
        return self._info.can_inpaint

    @property
    def served_models(self) -> dict[str, ModelDefaults]:
        return dict(self._info.served_models)

    def defaults(self, kind: JobKind, model: str | None = None) -> KindDefaults:
        if model is None or model == self._info.model_name:
            return self._info.defaults[kind]
        defaults = kind_defaults(self._info.served_models[model], kind)
        if kind is JobKind.UPSCALE:
            return replace(defaults, scale=self._info.upscale_scales.get(model, 1))
        return defaults

    def memory(self) -> DeviceMemory:
        return self._book.memory()

    def replica_stats(self) -> list[ReplicaStats]:
        """Each replica seen so far: its batches in flight, totals, and images per second over a minute."""
        return self._book.stats()

    def run_batch(
        self,
        items: list[BatchItem],
        on_step: Callable[[StepUpdate], None],
        should_stop: Callable[[], bool],
    ) -> list[list[GeneratedImage]]:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return self._attempt(items, on_step, should_stop)
            except _ReplicaDied as exc:
                if attempt == ATTEMPTS:
                    raise ReplicaLost(
                        f"model replica {exc.replica or '?'} died and so did the retry: {exc.cause}"
                    ) from None
                self.retries += 1
                log.warning(
                    "model replica %s died during a batch of %s; running it again on another replica",
                    exc.replica or "?", [i.job_id for i in items],
                )  # fmt: skip
        raise AssertionError("unreachable")

    def _attempt(
        self,
        items: list[BatchItem],
        on_step: Callable[[StepUpdate], None],
        should_stop: Callable[[], bool],
    ) -> list[list[GeneratedImage]]:
        # A streaming handle's call returns a generator; Serve types it as either kind of response.
        stream = cast(
            DeploymentResponseGenerator[Any], self._handle.run.remote(items, self._progress_interval_s)
        )
        attempt = _Attempt(self._book, sum(i.request.count for i in items))
        try:
            for message in attempt.messages(stream):
                if isinstance(message, StepMessage):
                    on_step(message.update)
                    if should_stop():
                        stream.cancel()  # type: ignore[no-untyped-call]  # Ray leaves it untyped
                        return []  # the scheduler drops a stopped batch's output
                    continue
                return attempt.result(message)
        finally:
            attempt.close()
        raise _ReplicaDied(attempt.replica, "the replica's stream ended without a result")


class _ReplicaDied(Exception):
    def __init__(self, replica: str | None, cause: str) -> None:
        super().__init__(cause)
        self.replica = replica
        self.cause = cause


class _Attempt:
    """One try of a batch, booked against the replica that turns out to run it."""

    def __init__(self, book: ReplicaBook, images: int) -> None:
        self._book = book
        self._images = images
        self.replica: str | None = None

    def messages(self, stream: DeploymentResponseGenerator[Any]) -> Iterator[ReplicaMessage]:
        """The replica's messages, turning a dead replica into `_ReplicaDied`."""
        try:
            for message in stream:
                self._seen(message.replica)
                yield message
        except RayActorError as exc:
            if self.replica is not None:
                self._book.failed(self.replica, lost=True)
            raise _ReplicaDied(self.replica, f"{type(exc).__name__}: {exc}".splitlines()[0]) from None

    def result(self, message: BatchDone | BatchFailed) -> list[list[GeneratedImage]]:
        if isinstance(message, BatchFailed):
            self._book.failed(message.replica, lost=False)
            raise (EngineOutOfMemory if message.out_of_memory else EngineError)(message.message)
        self._book.done(message.replica, message, self._images)
        return message.images

    def close(self) -> None:
        if self.replica is not None:
            self._book.ended(self.replica)

    def _seen(self, replica: str) -> None:
        if self.replica is None:
            self.replica = replica
            self._book.started(replica)


# --- the ingress deployment ---


class Ingress:
    """The single ingress replica: the standalone worker's aiohttp app over a `RayEngine`."""

    # Serve awaits an async constructor; mypy knows __init__ only as synchronous.
    async def __init__(self, model: DeploymentHandle[Any], settings: WorkerSettings) -> None:  # type: ignore[misc]
        engine = await RayEngine.connect(model, settings.progress_interval_s)
        self._worker: RunningWorker = await start_worker(settings, engine)
        log.info("ingress serving the /v1 RPC on %s", self._worker.url)

    def url(self) -> str:
        return self._worker.url

    def check_health(self) -> None:
        if not self._worker.runner.server:
            raise RuntimeError("the ingress's HTTP server is not running")

    async def __del__(self) -> None:
        await self._worker.stop()


def build_app(engine: EngineSettings, worker: WorkerSettings, scale: RayScaleSettings) -> serve.Application:
    """The Serve application: the ingress on the head node, the model replicas wherever GPUs are."""
    check_bind(worker)
    worker = worker.model_copy(update={"batches_in_flight": scale.max_replicas})
    model = serve.deployment(name=MODEL_NAME)(ModelReplica).options(
        max_ongoing_requests=1,
        ray_actor_options={"num_cpus": scale.num_cpus, "num_gpus": scale.num_gpus},
        **_replica_count(scale),
    )
    ingress = serve.deployment(name=INGRESS_NAME)(Ingress).options(
        num_replicas=1,
        max_ongoing_requests=64,
        # On the head node, so the RPC's address is the head's whatever the cluster's shape.
        ray_actor_options={"num_cpus": 0, "resources": {"node:__internal_head__": 0.001}},
    )
    app: serve.Application = ingress.bind(model.bind(engine), worker)
    return app


def _replica_count(scale: RayScaleSettings) -> dict[str, Any]:
    if not scale.autoscaling:
        return {"num_replicas": scale.min_replicas}
    return {
        "autoscaling_config": {
            "min_replicas": scale.min_replicas,
            "max_replicas": scale.max_replicas,
            "target_ongoing_requests": scale.target_queue_per_replica,
            "upscale_delay_s": scale.upscale_delay_s,
            "downscale_delay_s": scale.downscale_delay_s,
        }
    }


# --- starting it ---


def connect_cluster(address: str | None, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at `address` (None starts a local one); unreachable is a clear error.

    The address is probed first: `ray.init` keeps retrying an unreachable one for minutes.
    """
    if ray.is_initialized():
        return
    if address is not None:
        probe_address(address)
    try:
        if address is None:
            ray.init(num_cpus=num_cpus, include_dashboard=False)
        else:
            ray.init(address=address, include_dashboard=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RayClusterUnreachable(f"could not join the Ray cluster at {address!r}: {reason}") from None


def probe_address(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Refuse an address whose host and port do not accept a TCP connection within `timeout_s`."""
    if address == "auto":
        return  # Ray reads the local cluster's address from its session files
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise RayClusterUnreachable(f"the Ray address {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise RayClusterUnreachable(
            f"could not reach the Ray cluster at {address!r}: {exc.strerror or type(exc).__name__}. "
            "Start it with `ray start --head` on that machine, or leave out --address for a local one."
        ) from None


def deploy(engine: EngineSettings, worker: WorkerSettings, scale: RayScaleSettings) -> str:
    """Deploy the application on the joined cluster; return the ingress's `/v1` base URL."""
    # No Serve HTTP proxies: the ingress serves the RPC itself, and a proxy would only hold port 8000.
    serve.start(proxy_location="Disabled")
    handle = serve.run(build_app(engine, worker, scale), name=APP_NAME, route_prefix=None)
    url: str = handle.url.remote().result()
    return url


def run_ray(
    engine: EngineSettings, worker: WorkerSettings, scale: RayScaleSettings, address: str | None
) -> None:
    """`run.py serve --ray`: deploy, serve until SIGINT or SIGTERM, then take the application down."""
    connect_cluster(address)
    scale = fit_to_cluster(scale, engine)
    url = deploy(engine, worker, scale)
    log.info("brushfire on Ray Serve: the /v1 RPC is at %s (%s)", url, _describe(scale))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("shutting down the Ray Serve application")
    with contextlib.suppress(Exception):  # the cluster may already be gone; nothing left to undo then
        serve.delete(APP_NAME)


def fit_to_cluster(scale: RayScaleSettings, engine: EngineSettings) -> RayScaleSettings:
    """Ask no GPU per replica on a cluster without GPUs when the engine may run on the CPU.

    Otherwise Serve would wait forever for GPUs that no node has. An engine set to `cuda` keeps its
    request, so the replicas wait for a GPU node to join (Serve logs that they cannot be placed).
    """
    gpus = ray.cluster_resources().get("GPU", 0.0)  # type: ignore[no-untyped-call]  # Ray leaves it untyped
    if scale.num_gpus > 0 and gpus == 0 and engine.device in ("auto", "cpu"):
        log.warning("the Ray cluster has no GPUs: the model replicas run on CPUs")
        return scale.model_copy(update={"num_gpus": 0.0})
    return scale


def _describe(scale: RayScaleSettings) -> str:
    if scale.autoscaling:
        return f"{scale.min_replicas}-{scale.max_replicas} model replicas, autoscaling"
    return f"{scale.min_replicas} model replicas"
