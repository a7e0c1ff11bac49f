"""The aiohttp RPC server over the real tiny pipeline: jobs end to end, every bad input, auth, shutdown."""

from __future__ import annotations

import asyncio
import io
import json
import random
import re
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from aiohttp import ClientSession, FormData
from aiohttp.test_utils import TestClient
from PIL import Image
from pytest_aiohttp import AiohttpClient

from inference.engine_api import Engine
from inference.intake import fit_size
from inference.protocol import JobEvent, JobInfo, WorkerInfo, WorkerStats
from inference.server import SCHEDULER, WorkerConfigError, check_bind, create_app, run_worker
from inference.settings import EngineSettings, ModelDefaults, WorkerSettings
from inference.vocabulary import Lane
from tests.inference import fixtures_ray
from tests.inference.fixtures_worker import (
    InstrumentedEngine,
    decompression_bomb,
    job_fields,
    png_bytes,
)

# The real tiny engine in-process, then the same engine code on 2 Ray Serve replicas (when installed).
tiny_engine = fixtures_ray.tiny_engine_on_each_server

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture
def make_client(aiohttp_client: AiohttpClient, tiny_engine: Engine) -> MakeClient:
    async def go(engine: Engine | None = None, **settings: Any) -> Client:
        settings.setdefault("token", TOKEN)
        app = create_app(WorkerSettings.model_validate(settings), engine or tiny_engine)
        return await aiohttp_client(app, headers=AUTH)

    return go


@pytest.fixture
async def client(make_client: MakeClient) -> Client:
    return await make_client(
        max_image_bytes=64 * 1024, max_image_pixels=512 * 512, max_pixels=256 * 256, progress_interval_s=0
    )


def body(**fields: Any) -> dict[str, Any]:
    return job_fields(**fields)


async def post_job(client: Client, **fields: Any) -> JobInfo:
    resp = await client.post("/v1/jobs", json=body(**fields))
    assert resp.status == 201, await resp.text()
    return JobInfo.model_validate(await resp.json())


async def post_image_job(client: Client, image: bytes, **fields: Any) -> Any:
    form = FormData()
    form.add_field("job", json.dumps(body(**fields)), content_type="application/json")
    form.add_field("image", image, content_type="application/octet-stream", filename="in.png")
    return await client.post("/v1/jobs", data=form)


async def events(client: Client, job_id: str, after: int = 0) -> list[JobEvent]:
    async with asyncio.timeout(60):
        resp = await client.get(f"/v1/jobs/{job_id}/events", params={"after": after})
        assert resp.status == 200 and resp.content_type == "application/x-ndjson"
        return [JobEvent.model_validate_json(line) async for line in resp.content if line.strip()]


async def until(client: Client, job_id: str, event_type: str) -> None:
    """Follow the job's event stream until an event of this type arrives."""
    async with asyncio.timeout(60):
        resp = await client.get(f"/v1/jobs/{job_id}/events")
        async for line in resp.content:
            if line.strip() and JobEvent.model_validate_json(line).type == event_type:
                resp.close()
                return
    raise AssertionError(f"no {event_type} event for {job_id}")


async def wait(client: Client, job_id: str) -> JobInfo:
    final = (await events(client, job_id))[-1]
    assert final.job is not None
    return final.job


async def fetch_png(client: Client, job_id: str, n: int) -> Image.Image:
    resp = await client.get(f"/v1/jobs/{job_id}/images/{n}")
    assert resp.status == 200 and resp.content_type == "image/png"
    img = Image.open(io.BytesIO(await resp.read()))
    img.load()
    return img


async def test_concurrent_jobs_all_complete_with_valid_pngs(client: Client) -> None:
    infos = await asyncio.gather(
        *[post_job(client, user=f"user{i % 3}", seed=i, count=1 + i % 2) for i in range(8)]
    )
    finals = await asyncio.gather(*[wait(client, i.id) for i in infos])
    for info, final in zip(infos, finals, strict=True):
        assert final.status == "succeeded" and final.images == info.count
        for n in range(info.count):
            img = await fetch_png(client, info.id, n)
            assert img.format == "PNG" and img.size == (64, 64)
    stats = WorkerStats.model_validate(await (await client.get("/v1/stats")).json())
    assert stats.jobs_done == 8 and stats.images_per_s_1m > 0


async def test_seed_gives_the_same_image_alone_or_batched(
    make_client: MakeClient, tiny_engine: Engine
) -> None:
    engine = InstrumentedEngine(tiny_engine)
    client = await make_client(engine=engine, max_batch=8)
    alone = await post_job(client, seed=1234, prompt="a blue square")
    await wait(client, alone.id)
    blocker = await post_job(client, steps=60, user="blocker")  # holds the GPU while the crowd queues
    crowd = [await post_job(client, seed=s, user=f"u{s}", prompt=f"shape {s}") for s in range(3)]
    repeat = await post_job(client, seed=1234, prompt="a blue square", user="again")
    await asyncio.gather(*[wait(client, i.id) for i in (blocker, *crowd, repeat)])
    (call,) = [c for c in engine.calls if repeat.id in c.job_ids]
    assert call.images == 4  # it really ran inside a batch
    a = np.asarray(await fetch_png(client, alone.id, 0), dtype=np.int16)
    b = np.asarray(await fetch_png(client, repeat.id, 0), dtype=np.int16)
    assert np.abs(a - b).max() <= 3


async def test_fair_share_and_lane_priority_over_http(make_client: MakeClient, tiny_engine: Engine) -> None:
    engine = InstrumentedEngine(tiny_engine)
    client = await make_client(engine=engine, max_batch=1, relax_share=0.0)
    blocker = await post_job(client, steps=60, user="alice")  # holds the GPU while the rest queue
    await until(client, blocker.id, "started")
    relaxed = await post_job(client, user="carol", lane="relax")
    backlog = [await post_job(client, user="alice", prompt=f"circle {i}") for i in range(4)]
    bobs = await post_job(client, user="bob")
    await asyncio.gather(*[wait(client, i.id) for i in (blocker, relaxed, *backlog, bobs)])
    order = [c.job_ids[0] for c in engine.calls]
    expected = [blocker, backlog[0], bobs, *backlog[1:], relaxed]
    assert order == [i.id for i in expected]


@pytest.mark.parametrize(
    ("kind", "extra"), [("img2img", {"strength": 0.5}), ("edit", {"image_guidance": 1.5})]
)
async def test_image_jobs_with_a_multipart_image(client: Client, kind: str, extra: dict[str, Any]) -> None:
    resp = await post_image_job(client, png_bytes(96, 64), kind=kind, width=None, height=None, **extra)
    assert resp.status == 201, await resp.text()
    info = JobInfo.model_validate(await resp.json())
    assert (info.width, info.height) == (96, 64)
    final = await wait(client, info.id)
    assert final.status == "succeeded", final.error
    assert (await fetch_png(client, info.id, 0)).size == (96, 64)


async def test_idempotent_resubmit_returns_the_same_job_and_conflict_is_409(client: Client) -> None:
    first = await client.post("/v1/jobs", json=body(idempotency_key="dup"))
    again = await client.post("/v1/jobs", json=body(idempotency_key="dup"))
    assert (first.status, again.status) == (201, 200)
    assert (await first.json())["id"] == (await again.json())["id"]
    other = await client.post("/v1/jobs", json=body(idempotency_key="dup", prompt="a green star"))
    assert other.status == 409 and (await other.json())["code"] == "conflict"


async def test_events_stream_progress_and_resume(client: Client) -> None:
    info = await post_job(client, steps=4)
    seen = await events(client, info.id)
    types = [e.type for e in seen]
    assert types[0] == "queued" and types[-1] == "done" and "started" in types
    assert [e.step for e in seen if e.type == "progress"] == [1, 2, 3, 4]
    resumed = await events(client, info.id, after=seen[1].seq)
    assert [e.type for e in resumed][-1] == "done" and all(e.seq > seen[1].seq for e in resumed)


async def test_cancel_queued_and_running_over_http(make_client: MakeClient) -> None:
    client = await make_client(max_batch=1)
    running = await post_job(client, steps=60)
    queued = await post_job(client, prompt="blue square")
    resp = await client.delete(f"/v1/jobs/{queued.id}")
    assert resp.status == 200 and (await resp.json())["status"] == "cancelled"
    await until(client, running.id, "started")
    resp = await client.post(f"/v1/jobs/{running.id}/cancel")
    assert (await resp.json())["status"] == "cancelled"
    assert (await wait(client, running.id)).status == "cancelled"
    resp = await client.get(f"/v1/jobs/{running.id}/images/0")
    assert resp.status == 409 and (await resp.json())["code"] == "not_ready"


async def test_preview_is_a_small_jpeg_after_steps(client: Client) -> None:
    info = await post_job(client, steps=3)
    resp = await client.get(f"/v1/jobs/{info.id}/preview")
    assert resp.status in (200, 204)
    await wait(client, info.id)
    resp = await client.get(f"/v1/jobs/{info.id}/preview")
    if resp.status == 200:  # the engine makes previews when configured to
        assert resp.content_type == "image/jpeg"
        assert max(Image.open(io.BytesIO(await resp.read())).size) <= 256


async def test_queue_full_is_429_with_retry_after(make_client: MakeClient) -> None:
    client = await make_client(max_batch=1, max_queue_per_user=1)
    await post_job(client, steps=40)
    await post_job(client)  # queued behind the first (which may already run)
    statuses = []
    for _ in range(3):
        resp = await client.post("/v1/jobs", json=body())
        statuses.append(resp.status)
        if resp.status == 429:
            err = await resp.json()
            assert err["code"] == "user_queue_full" and err["retry_after"] >= 1
            assert int(resp.headers["Retry-After"]) >= 1
    assert 429 in statuses


BAD_JSON: list[tuple[str, dict[str, Any], int, str]] = [
    ("unknown field", {"colour": "red"}, 400, "unknown_field"),
    ("empty prompt", {"prompt": "   "}, 400, "prompt_empty"),
    ("long prompt", {"prompt": "a" * 1001}, 400, "prompt_too_long"),
    ("long negative", {"negative_prompt": "a" * 1001}, 400, "prompt_too_long"),
    ("width off 8", {"width": 100}, 400, "bad_size"),
    ("width too small", {"width": 32}, 400, "bad_size"),
    ("height too big", {"height": 4096}, 400, "bad_size"),
    ("over max pixels", {"width": 512, "height": 512}, 400, "bad_size"),
    ("steps zero", {"steps": 0}, 400, "invalid_field"),
    ("steps too many", {"steps": 151}, 400, "invalid_field"),
    ("count zero", {"count": 0}, 400, "invalid_field"),
    ("count too many", {"count": 9}, 400, "invalid_field"),
    ("strength on generate", {"strength": 0.5}, 400, "invalid_field"),
    ("seed negative", {"seed": -1}, 400, "invalid_field"),
    ("steps not a number", {"steps": "many"}, 400, "invalid_field"),
    ("bad lane", {"lane": "vip"}, 400, "invalid_field"),
    ("bad key", {"idempotency_key": "has space"}, 400, "invalid_field"),
    ("image on generate", {}, 400, "image_not_allowed"),
    ("unknown adapter", {"adapter": "ghibli"}, 400, "unknown_adapter"),
    ("bad output format", {"output_format": "gif"}, 400, "invalid_field"),
    ("output format not text", {"output_format": 3}, 400, "invalid_field"),
]


@pytest.mark.parametrize(("name", "fields", "status", "code"), BAD_JSON, ids=[b[0] for b in BAD_JSON])
async def test_bad_job_fields_are_refused(
    client: Client, name: str, fields: dict[str, Any], status: int, code: str
) -> None:
    data = job_fields(**fields)
    if name == "image on generate":
        form = FormData()
        form.add_field("job", json.dumps(data), content_type="application/json")
        form.add_field("image", png_bytes(), content_type="image/png")
        resp = await client.post("/v1/jobs", data=form)
    else:
        resp = await client.post("/v1/jobs", json=data)
    err = await resp.json()
    assert (resp.status, err["code"]) == (status, code), err
    assert err["message"]


@pytest.mark.parametrize(
    ("strength", "ok"), [(0.0, False), (1.5, False), (-0.2, False), (1.0, True), (0.3, True)]
)
async def test_strength_range_on_img2img(client: Client, strength: float, ok: bool) -> None:
    resp = await post_image_job(client, png_bytes(), kind="img2img", strength=strength)
    err = await resp.json()
    if ok:
        assert resp.status == 201, err
    else:
        assert (resp.status, err["code"], err["field"]) == (400, "invalid_field", "strength")


def _truncated_png() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((128, 128), 64).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()[:-400]


BAD_IMAGES: list[tuple[str, Callable[[], bytes], int, str]] = [
    ("not an image", lambda: b"this is not a picture at all", 400, "bad_image"),
    ("empty image", lambda: b"", 400, "bad_image"),
    ("truncated png", _truncated_png, 400, "bad_image"),
    ("over byte limit", lambda: b"\x89PNG" + b"\0" * (64 * 1024 + 1), 413, "image_too_large"),
    ("over pixel limit", lambda: png_bytes(1024, 1024), 413, "image_too_many_pixels"),
    ("decompression bomb", decompression_bomb, 413, "image_too_many_pixels"),
]


@pytest.mark.parametrize(("name", "make", "status", "code"), BAD_IMAGES, ids=[b[0] for b in BAD_IMAGES])
async def test_bad_edit_images_are_refused(
    client: Client, name: str, make: Callable[[], bytes], status: int, code: str
) -> None:
    resp = await post_image_job(client, make(), kind="edit", width=None, height=None)
    err = await resp.json()
    assert (resp.status, err["code"]) == (status, code), err
    assert (await client.get("/healthz")).status == 200  # and the worker carries on


async def test_edit_without_image_is_refused(client: Client) -> None:
    resp = await client.post("/v1/jobs", json=body(kind="edit"))
    assert (resp.status, (await resp.json())["code"]) == (400, "image_required")


@pytest.mark.parametrize(
    ("raw", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b"\xff\xfe", "application/json", 400),
        (b"prompt=cat", "application/x-www-form-urlencoded", 415),
        (b"", "application/json", 400),
    ],
)
async def test_malformed_bodies_are_refused(
    client: Client, raw: bytes, content_type: str, status: int
) -> None:
    resp = await client.post("/v1/jobs", data=raw, headers={"Content-Type": content_type})
    err = await resp.json()
    assert (resp.status, err["code"]) == (status, "bad_request"), err


async def test_oversized_json_body_is_refused(make_client: MakeClient) -> None:
    client = await make_client(max_image_bytes=1024)
    raw = b'{"prompt": "' + b"a" * 200_000 + b'"}'
    resp = await client.post("/v1/jobs", data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == 413 and (await resp.json())["code"] == "body_too_large"


@pytest.mark.parametrize(
    ("content_type", "raw"),
    [
        ("multipart/form-data", b"no boundary given"),
        ("multipart/form-data; boundary=xyz", b"no boundary in the body"),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="job"\r\n\r\n{',
        ),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n--xyz--\r\n',
        ),
    ],
)
async def test_malformed_multipart_is_refused(client: Client, content_type: str, raw: bytes) -> None:
    resp = await client.post("/v1/jobs", data=raw, headers={"Content-Type": content_type})
    err = await resp.json()
    assert (resp.status, err["code"]) == (400, "bad_request"), err


async def test_multipart_without_job_part_is_refused(client: Client) -> None:
    form = FormData()
    form.add_field("image", png_bytes(), content_type="image/png")
    resp = await client.post("/v1/jobs", data=form)
    assert (resp.status, (await resp.json())["code"]) == (400, "bad_request")


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/jobs/nope", 404, "not_found"),
        ("DELETE", "/v1/jobs/nope", 404, "not_found"),
        ("GET", "/v1/jobs/nope/events", 404, "not_found"),
        ("GET", "/v1/jobs/nope/images/0", 404, "not_found"),
        ("GET", "/v1/jobs/nope/preview", 404, "not_found"),
        ("GET", "/v1/nothing-here", 404, "not_found"),
        ("GET", "/v2/jobs", 404, "not_found"),
        ("PUT", "/v1/jobs", 405, "bad_request"),
    ],
)
async def test_unknown_routes_and_jobs(
    client: Client, method: str, path: str, status: int, code: str
) -> None:
    resp = await client.request(method, path)
    assert resp.status == status
    assert (await resp.json())["code"] == code


@pytest.mark.parametrize(
    ("fmt", "media_type", "magic"),
    [("png", "image/png", b"\x89PNG"), ("webp", "image/webp", b"RIFF"), ("jpeg", "image/jpeg", b"\xff\xd8")],
)
async def test_an_image_is_served_in_the_format_its_job_asked_for(
    client: Client, fmt: str, media_type: str, magic: bytes
) -> None:
    info = await post_job(client, output_format=fmt)
    await wait(client, info.id)
    resp = await client.get(f"/v1/jobs/{info.id}/images/0")
    assert resp.status == 200 and resp.content_type == media_type
    assert (await resp.read()).startswith(magic)


async def test_bad_image_index(client: Client) -> None:
    info = await post_job(client)
    await wait(client, info.id)
    for n, status in (("1", 404), ("x", 404), ("-1", 404)):
        resp = await client.get(f"/v1/jobs/{info.id}/images/{n}")
        assert resp.status == status and (await resp.json())["code"] == "not_found"


async def test_auth_required_except_healthz(client: Client) -> None:
    async with ClientSession() as raw:  # without the test client's default token
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            for method, path in (("GET", "/v1/stats"), ("GET", "/v1/info"), ("POST", "/v1/jobs"), ("GET", "/metrics"), ("GET", "/readyz"), ("GET", "/nope")):  # fmt: skip
                resp = await raw.request(method, client.make_url(path), headers=headers)
                assert resp.status == 401 and (await resp.json())["code"] == "unauthorized"
        resp = await raw.get(client.make_url("/healthz"))
        assert resp.status == 200 and (await resp.json()) == {"ok": True}
    assert (await client.get("/readyz")).status == 200


async def test_no_token_means_open_on_loopback(make_client: MakeClient) -> None:
    client = await make_client(token=None)
    async with ClientSession() as raw:
        assert (await raw.get(client.make_url("/v1/stats"))).status == 200


def test_non_loopback_bind_without_token_is_refused() -> None:
    for host in ("0.0.0.0", "192.168.1.4", "::", "worker.example"):
        with pytest.raises(WorkerConfigError, match="without a token"):
            check_bind(WorkerSettings(host=host))
    check_bind(WorkerSettings(host="0.0.0.0", token="t"))
    check_bind(WorkerSettings(host="::1"))
    check_bind(WorkerSettings(host="localhost"))
    # run_worker refuses before it loads any model.
    with pytest.raises(WorkerConfigError):
        run_worker(WorkerSettings(host="0.0.0.0"), EngineSettings(model="/does/not/exist"))


async def test_stats_and_metrics(client: Client) -> None:
    info = await post_job(client, count=2)
    await wait(client, info.id)
    stats = WorkerStats.model_validate(await (await client.get("/v1/stats")).json())
    assert stats.jobs_done == 1 and stats.lanes[Lane.FAST].queued == 0 and stats.accepting
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.content_type == "text/plain"
    text = await resp.text()
    assert 'brushfire_queue_depth{lane="fast"} 0' in text
    assert 'brushfire_jobs_total{status="succeeded"} 1' in text
    assert "brushfire_images_total 2" in text
    held = re.search(r"^brushfire_result_bytes (\d+)$", text, re.M)
    assert held is not None and int(held.group(1)) > 0  # two pictures not fetched yet
    assert "brushfire_result_budget_bytes 6.71089e+07" in text
    assert "# TYPE brushfire_http_requests_total counter" in text
    for line in text.splitlines():
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2


async def test_info_advertises_the_model_and_its_defaults(client: Client, tiny_engine: Engine) -> None:
    # The same on the Ray ingress: its RayEngine hands on what a model replica's engine was loaded with.
    resp = await client.get("/v1/info")
    assert resp.status == 200
    info = WorkerInfo.model_validate(await resp.json())
    assert info.model == tiny_engine.model_name and info.has_edit_model
    assert info.defaults == ModelDefaults(steps=2, guidance=0.0, width=64, height=64, img2img_strength=0.75)
    # What the worker advertises is what an unset field takes.
    job = await post_job(client, steps=None, width=None, height=None)
    assert (job.steps, job.guidance, job.width, job.height) == (2, 0.0, 64, 64)
    await wait(client, job.id)


async def test_out_of_memory_split_through_the_server(make_client: MakeClient, tiny_engine: Engine) -> None:
    engine = InstrumentedEngine(tiny_engine, oom_over=2)
    client = await make_client(engine=engine, max_batch=4)
    infos = await asyncio.gather(*[post_job(client, user=f"u{i}", seed=i) for i in range(4)])
    finals = await asyncio.gather(*[wait(client, i.id) for i in infos])
    assert all(f.status == "succeeded" for f in finals)
    assert any(c.images > 2 for c in engine.calls)  # an OOM happened and was split


async def test_graceful_shutdown_over_http(make_client: MakeClient) -> None:
    client = await make_client(max_batch=1)
    running = await post_job(client, steps=20)
    queued = await post_job(client, prompt="a green star")
    await until(client, running.id, "started")
    stream = asyncio.create_task(events(client, running.id))
    shutdown = asyncio.create_task(client.app[SCHEDULER].shutdown())
    await asyncio.sleep(0)
    resp = await client.post("/v1/jobs", json=body())
    assert resp.status == 503 and (await resp.json())["code"] == "shutting_down"
    assert (await client.get("/readyz")).status == 503
    await shutdown
    assert (await stream)[-1].type == "done"
    info = JobInfo.model_validate(await (await client.get(f"/v1/jobs/{queued.id}")).json())
    assert info.status == "failed" and info.error is not None and info.error.code == "shutting_down"


def test_an_input_image_larger_than_allowed_output_is_fitted() -> None:
    assert fit_size(512, 384, 256 * 256) == (288, 216)
    assert fit_size(96, 64, 256 * 256) == (96, 64)
    assert fit_size(4000, 50, 1024 * 1024) == (2048, 64)  # clamped to the side limits


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    choices: list[Callable[[], Any]] = [
        lambda: None,
        lambda: rng.choice([True, False]),
        lambda: rng.randint(-(2**40), 2**40),
        lambda: rng.uniform(-1e6, 1e6),
        lambda: "".join(rng.choice("ab c\x00é\n{}") for _ in range(rng.randint(0, 12))),
    ]
    if depth < 2:
        choices += [
            lambda: [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))],
            lambda: {"k": _random_value(rng, depth + 1)},
        ]
    return rng.choice(choices)()


async def test_random_bodies_never_cause_a_server_error(make_client: MakeClient) -> None:
    client = await make_client(max_queue_per_user=1, max_queue_per_lane=2)
    rng = random.Random(20261129)
    fields = [*job_fields(), "kind", "lane", "count", "strength", "adapter", "guidance"]
    for _ in range(150):
        doc = {f: _random_value(rng) for f in rng.sample(fields, rng.randint(0, len(fields)))}
        if rng.random() < 0.5:  # mostly valid, one field broken
            doc = job_fields() | {rng.choice(fields): _random_value(rng)}
        resp = await client.post("/v1/jobs", json=doc)
        assert resp.status < 500, (doc, await resp.text())
        raw = rng.randbytes(rng.randint(0, 200))
        content_type = rng.choice(["application/json", "multipart/form-data; boundary=b", "text/plain", ""])
        resp = await client.post("/v1/jobs", data=raw, headers={"Content-Type": content_type})
        assert resp.status < 500, (raw, content_type, await resp.text())
