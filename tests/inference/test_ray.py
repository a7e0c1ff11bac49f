"""The worker's RPC on Ray Serve: the deployed ingress, replica faults, per-replica stats, bad addresses.

One local Ray cluster for the module (2 CPUs) runs the real application with 2 replicas of the tiny
model. Tests that kill replicas come last: Serve restarts them, and the module waits for that.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient
from PIL import Image
from pytest_aiohttp import AiohttpClient

from inference.client import WorkerClient, WorkerRejected
from inference.engine_api import Engine
from inference.protocol import ErrorCode, JobEvent, JobInfo, JobRequest
from inference.server import RunningWorker, create_app, start_worker
from inference.settings import EngineSettings, WorkerSettings
from inference.vocabulary import JobStatus
from tests.inference import fixtures_ray, fixtures_worker
from tests.inference.fixtures_ray import RAY_TOKEN, REPLICAS, RayApp
from tests.inference.fixtures_worker import job, job_fields, png_bytes

ray = pytest.importorskip("ray", reason="the optional `ray` extra is not installed")
serve = pytest.importorskip("ray.serve")

from inference.ray_app import RayScaleSettings, fit_to_cluster  # noqa: E402 (needs ray)

ray_app = fixtures_ray.ray_app  # the cluster and app, once per module
tiny_engine = fixtures_worker.tiny_engine

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture
async def remote(ray_app: RayApp) -> AsyncIterator[WorkerClient]:
    """The bot's own client, pointed at the deployed ingress."""
    async with WorkerClient(ray_app.url, token=RAY_TOKEN, timeout=60, backoff=0.05) as c:
        yield c


@pytest.fixture
def make_client(aiohttp_client: AiohttpClient, ray_app: RayApp) -> MakeClient:
    """The worker's app in-process over the module's replicas, to look inside the `RayEngine`."""

    async def go(**settings: Any) -> Client:
        settings = {"progress_interval_s": 0} | settings
        app = create_app(WorkerSettings.model_validate(settings), ray_app.engine)
        return await aiohttp_client(app)

    return go


async def post(client: Client, **fields: Any) -> JobInfo:
    resp = await client.post("/v1/jobs", json=job_fields(**fields))
    assert resp.status == 201, await resp.text()
    return JobInfo.model_validate(await resp.json())


async def final(client: Client, job_id: str) -> JobInfo:
    async with asyncio.timeout(120):
        resp = await client.get(f"/v1/jobs/{job_id}/events")
        lines = [JobEvent.model_validate_json(line) async for line in resp.content if line.strip()]
    assert lines[-1].job is not None
    return lines[-1].job


async def until_progress(client: Client, job_id: str) -> None:
    async with asyncio.timeout(60):
        resp = await client.get(f"/v1/jobs/{job_id}/events")
        async for line in resp.content:
            if line.strip() and JobEvent.model_validate_json(line).type == "progress":
                resp.close()
                return
    raise AssertionError(f"job {job_id} made no progress")


# --- the deployed ingress, as the bot sees it ---


async def test_jobs_through_the_deployed_ingress(remote: WorkerClient) -> None:
    assert await remote.ready()
    infos = [await remote.submit(job(user=f"u{i % 2}", seed=i, count=1 + i % 2)) for i in range(4)]
    edit = await remote.submit(job(kind="img2img", strength=0.5, width=None, height=None), png_bytes(96, 64))
    for info in [*infos, edit]:
        done = await remote.wait(info.id)
        assert done.status is JobStatus.SUCCEEDED and done.images == info.count, done.error
        img = Image.open(io.BytesIO(await remote.image(info.id, done.images - 1)))
        assert img.format == "PNG" and img.size == (info.width, info.height)
    stats = await remote.stats()
    assert stats.device == "ray:cpu" and stats.jobs_done == 5


async def test_the_ingress_refuses_like_the_worker(remote: WorkerClient, ray_app: RayApp) -> None:
    for fields, code in (({"prompt": " "}, ErrorCode.PROMPT_EMPTY), ({"width": 100}, ErrorCode.BAD_SIZE)):
        with pytest.raises(WorkerRejected) as caught:
            # Unchecked here, so the ingress sees the bad field: model_construct skips validation.
            await remote.submit(JobRequest.model_construct(**job_fields(**fields)))  # type: ignore[arg-type]
        assert caught.value.code is code
    async with WorkerClient(ray_app.url, token="wrong", timeout=10, backoff=0.01) as stranger:
        with pytest.raises(WorkerRejected) as caught:
            await stranger.stats()
        assert caught.value.code is ErrorCode.UNAUTHORIZED


async def test_stats_and_metrics_report_each_replica(remote: WorkerClient, ray_app: RayApp) -> None:
    infos = [await remote.submit(job(user=f"s{i}", seed=i, steps=20)) for i in range(4)]
    for info in infos:
        await remote.wait(info.id)
    stats = await remote.stats()
    assert len([r for r in stats.replicas if r.batches]) == REPLICAS  # the two slots used both replicas
    assert sum(r.images for r in stats.replicas) >= 4 and all(r.alive for r in stats.replicas)
    assert any(r.images_per_s_1m > 0 for r in stats.replicas) and stats.running == 0
    async with ClientSession(headers={"Authorization": f"Bearer {RAY_TOKEN}"}) as http:
        text = await (await http.get(f"{ray_app.url}/metrics")).text()
    for r in stats.replicas:
        assert f'brushfire_replica_images_total{{replica="{r.id}"}} {r.images}' in text
        assert f'brushfire_replica_up{{replica="{r.id}"}} 1' in text
    assert "# TYPE brushfire_replica_images_per_second gauge" in text


async def test_same_seed_same_image_as_the_standalone_worker(
    remote: WorkerClient, tiny_engine: Engine
) -> None:
    standalone: RunningWorker = await start_worker(WorkerSettings(port=0), tiny_engine)
    try:
        async with WorkerClient(standalone.url, timeout=60) as local:
            pngs = []
            for client in (local, remote):
                info = await client.submit(job(seed=777, prompt="a yellow moon"))
                await client.wait(info.id)
                pngs.append(np.asarray(Image.open(io.BytesIO(await client.image(info.id, 0))), np.int16))
    finally:
        await standalone.stop()
    assert np.abs(pngs[0] - pngs[1]).max() <= 3


async def test_batches_run_on_both_replicas_at_once_in_fair_order(
    make_client: MakeClient, ray_app: RayApp
) -> None:
    client = await make_client(batches_in_flight=REPLICAS, max_batch=1, relax_share=0.0)
    alice = [await post(client, user="alice", steps=40, prompt=f"circle {i}") for i in range(4)]
    bob = await post(client, user="bob", steps=40)
    peak = 0
    async with asyncio.timeout(120):
        while not all(r.status.is_final for r in await asyncio.gather(*[_info(client, i.id) for i in alice])):
            peak = max(peak, sum(r.in_flight for r in ray_app.engine.replica_stats()))
            await asyncio.sleep(0.01)
    assert peak == REPLICAS  # both replicas ran a batch at the same time
    starts = {i.id: (await final(client, i.id)).started_at or 0.0 for i in (*alice, bob)}
    order = sorted(starts, key=starts.__getitem__)
    assert order.index(bob.id) < order.index(alice[-1].id)  # not stuck behind alice's whole backlog


async def _info(client: Client, job_id: str) -> JobInfo:
    return JobInfo.model_validate(await (await client.get(f"/v1/jobs/{job_id}")).json())


# --- addresses and settings ---


def test_an_unreachable_cluster_is_a_clear_error_naming_the_address() -> None:
    result = subprocess.run(
        [sys.executable, "run.py", "serve", "--ray", "--address", "127.0.0.1:1"],
        check=False,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "could not reach the Ray cluster at '127.0.0.1:1'" in result.stderr


def test_replicas_ask_for_no_gpu_on_a_cluster_without_one(ray_app: RayApp) -> None:
    assert fit_to_cluster(RayScaleSettings(), EngineSettings(device="auto")).num_gpus == 0
    assert fit_to_cluster(RayScaleSettings(), EngineSettings(device="cuda")).num_gpus == 1  # waits for one
    with pytest.raises(ValueError, match="over max_replicas"):
        RayScaleSettings(min_replicas=3, max_replicas=2)


# --- faults: replicas killed mid-batch (last: Serve restarts them) ---


def _busy_replicas(app: RayApp) -> list[str]:
    return [r.id for r in app.engine.replica_stats() if r.in_flight]


async def _kill_busy(app: RayApp, exclude: frozenset[str] = frozenset()) -> str:
    """Kill the replica that is running a batch now (not one in `exclude`); return its id."""
    for _ in range(3000):
        busy = [r for r in _busy_replicas(app) if r not in exclude]
        if busy:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("no replica took the batch")
    replica = busy[0]
    actor = ray.get_actor(f"SERVE_REPLICA::brushfire#ModelReplica#{replica}", namespace="serve")
    ray.kill(actor, no_restart=True)
    return replica


async def _wait_for_replicas(count: int) -> None:
    """Wait until Serve has replaced the killed replicas and all `count` run."""
    for _ in range(240):
        states = serve.status().applications["brushfire"].deployments["ModelReplica"].replica_states
        if states.get("RUNNING", 0) >= count and len(states) == 1:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"Serve did not bring the model replicas back: {states}")


async def test_a_replica_killed_mid_batch_runs_the_batch_again_elsewhere(
    make_client: MakeClient, ray_app: RayApp
) -> None:
    client = await make_client(batches_in_flight=REPLICAS, max_batch=1)
    retries = ray_app.engine.retries
    infos = [
        await post(client, user=f"k{i}", steps=150, count=1 + i % 2, idempotency_key=f"kill-me-once-{i}")
        for i in range(3)
    ]  # two run, one on each replica; one waits
    await until_progress(client, infos[0].id)
    killed = await _kill_busy(ray_app)
    finals = await asyncio.gather(*[final(client, i.id) for i in infos])
    for info, done in zip(infos, finals, strict=True):
        assert done.status == "succeeded" and done.images == info.count, done.error
        assert done.idempotency_key == info.idempotency_key
    assert ray_app.engine.retries > retries
    stats = {r.id: r for r in ray_app.engine.replica_stats()}
    assert not stats[killed].alive and stats[killed].failures >= 1
    assert any(r.alive and r.batches for r in stats.values())
    await _wait_for_replicas(REPLICAS)


async def test_a_batch_whose_retry_dies_too_fails_clearly(make_client: MakeClient, ray_app: RayApp) -> None:
    client = await make_client()
    info = await post(client, steps=150, idempotency_key="kill-me-twice")
    await until_progress(client, info.id)
    first = await _kill_busy(ray_app)
    await _kill_busy(ray_app, exclude=frozenset({first}))
    done = await final(client, info.id)
    assert done.status == "failed" and done.error is not None
    assert done.error.code == "pipeline_error" and "died and so did the retry" in done.error.message
    await _wait_for_replicas(REPLICAS)
    after = await post(client, prompt="after the storm")  # and the app serves on with new replicas
    assert (await final(client, after.id)).status == "succeeded"
