"""What a hostile client sends the worker's RPC: every refusal is a 4xx `{code, message}`, never a 500."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from inference.engine_api import Engine
from inference.server import create_app
from inference.settings import WorkerSettings
from inference.text import MAX_PROMPT_CHARS
from tests.inference.fixtures_worker import job_fields

Client = TestClient[Any, Any]
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"


@pytest.fixture
async def client(aiohttp_client: Callable[..., Awaitable[Client]], tiny_engine: Engine) -> Client:
    return await aiohttp_client(create_app(WorkerSettings(), tiny_engine))


async def refused(resp: Any, status: int = 400) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    body: dict[str, Any] = await resp.json()
    assert set(body) >= {"code", "message"} and body["message"]
    return body


async def post_raw(client: Client, raw: bytes) -> Any:
    return await client.post("/v1/jobs", data=raw, headers={"Content-Type": "application/json"})


async def test_deeply_nested_json_is_a_bad_request(client: Client) -> None:
    body = await refused(await post_raw(client, b"[" * 40_000))
    assert body["code"] == "bad_request" and "nest" in body["message"]
    inner = json.dumps(job_fields()).replace('"a red circle"', "[" * 40_000 + "]" * 40_000).encode()
    assert (await refused(await post_raw(client, inner)))["code"] == "bad_request"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"idempotency_key": "k", "user": "u", "prompt": "x", "seed": ' + b"9" * 5000 + b"}",
        b'{"idempotency_key": "k", "user": "u", "prompt": "x", "guidance": NaN}',
        b'{"idempotency_key": "k", "user": "u", "prompt": "x", "guidance": Infinity}',
        b'{"idempotency_key": "k", "user": "u", "prompt": "x", "steps": 1e999}',
        b'{"idempotency_key": "k", "user": "\\ud800", "prompt": "x"}',
    ],
)
async def test_number_and_text_bombs_are_refused(client: Client, raw: bytes) -> None:
    body = await refused(await post_raw(client, raw))
    assert body["code"] in ("bad_request", "invalid_field")


@pytest.mark.parametrize("after", ["9" * 5000, "\u00b2", "-1", "1e5", "0x10", "٣"])
async def test_an_absurd_event_cursor_is_a_bad_request(client: Client, after: str) -> None:
    resp = await client.post("/v1/jobs", json=job_fields())
    job = (await resp.json())["id"]
    body = await refused(await client.get(f"/v1/jobs/{job}/events", params={"after": after}))
    assert body["code"] == "invalid_field" and body["field"] == "after"


@pytest.mark.parametrize("n", ["\u00b2", "٣", "9" * 5000])
async def test_an_absurd_image_number_is_not_found(client: Client, n: str) -> None:
    resp = await client.post("/v1/jobs", json=job_fields())
    job = (await resp.json())["id"]
    assert (await refused(await client.get(f"/v1/jobs/{job}/images/{n}"), 404))["code"] == "not_found"


@pytest.mark.parametrize(
    "prompt", [ZERO_WIDTH, ZERO_WIDTH * 50, " \u200b \u2060\t\ufeff ", "\u3164\u115f", "\u202e\u202d\u2800"]
)
async def test_an_invisible_prompt_is_empty(client: Client, prompt: str) -> None:
    body = await refused(await client.post("/v1/jobs", json=job_fields(prompt=prompt)))
    assert body["code"] == "prompt_empty" and body["field"] == "prompt"


async def test_format_characters_and_lone_surrogates_are_dropped_from_a_visible_prompt(
    client: Client,
) -> None:
    resp = await client.post("/v1/jobs", json=job_fields(prompt="\u200ba red\u2060 circle\ufeff"))
    assert resp.status == 201, await resp.text()
    raw = json.dumps(job_fields(prompt="a \udfff cat\u202e")).encode()
    resp = await post_raw(client, raw)
    assert resp.status == 201, await resp.text()
    job = await resp.json()
    info = await (await client.get(f"/v1/jobs/{job['id']}")).json()
    assert info["status"] in ("queued", "running", "succeeded")


@pytest.mark.parametrize("chars", [MAX_PROMPT_CHARS + 1, 5_000, 20_000])
async def test_every_over_long_prompt_gets_prompt_too_long(client: Client, chars: int) -> None:
    for field in ("prompt", "negative_prompt"):
        body = await refused(await client.post("/v1/jobs", json=job_fields(**{field: "a" * chars})))
        assert (body["code"], body["field"]) == ("prompt_too_long", field)
    ok = await client.post("/v1/jobs", json=job_fields(prompt="a" * MAX_PROMPT_CHARS))
    assert ok.status == 201
