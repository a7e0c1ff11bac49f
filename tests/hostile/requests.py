"""Generated hostile HTTP requests for the worker, as raw bytes: every kind of malformed, nested, oversized,
invisible or lying input seen or imagined, drawn from a seeded random source (bench/hostile.py)."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from PIL import Image

from tests.hostile.tools import large_png

INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u202e\u202d\u2066\u2069\u00ad\u3164\u115f\u2800\u180e"
NUMERIC = (
    "width",
    "height",
    "steps",
    "guidance",
    "strength",
    "image_guidance",
    "count",
    "seed",
    "adapter_scale",
)
FIELDS = ("idempotency_key", "user", "lane", "kind", "prompt", "negative_prompt", "adapter", *NUMERIC)


@dataclass(frozen=True, slots=True)
class HostileRequest:
    kind: str
    raw: bytes
    expects_json: bool = True  # whether the refusal must be a JSON {code, message} (not aiohttp's framing)
    wait_s: float = 10.0


def _job(rng: random.Random, **fields: object) -> dict[str, object]:
    return {"idempotency_key": f"h{rng.getrandbits(48):x}", "user": f"u{rng.randrange(40)}",
            "prompt": "a red circle", "steps": 2, "width": 64, "height": 64, **fields}  # fmt: skip


def _post(body: bytes, ctype: str = "application/json", path: str = "/v1/jobs", extra: bytes = b"") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: w\r\nConnection: close\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


def _get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n".encode(
        "utf-8", "surrogateescape"
    )


def _nested(rng: random.Random) -> HostileRequest:
    depth = rng.choice([17, 64, 1000, 40_000, rng.randrange(17, 60_000)])
    opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
    inner = opener * depth + "1" + closer * depth
    if rng.random() < 0.5:
        return HostileRequest("nested", _post(inner.encode()))
    field = rng.choice(FIELDS)
    text = json.dumps(_job(rng)).replace('"a red circle"' if field == "prompt" else "2", inner, 1)
    return HostileRequest("nested_field", _post(text.encode()))


def _number(rng: random.Random) -> HostileRequest:
    field = rng.choice(NUMERIC)
    value = rng.choice([
        "9" * rng.randrange(41, 20_000), "-" + "9" * rng.randrange(41, 5000), f"1e{rng.randrange(300, 99999)}",
        "NaN", "Infinity", "-Infinity", f"0.{'0' * rng.randrange(400, 4000)}1", "1" + "0" * 4300,
    ])  # fmt: skip
    text = json.dumps(_job(rng, **{field: 0})).replace(f'"{field}": 0', f'"{field}": {value}')
    return HostileRequest("number", _post(text.encode()))


def _invisible(rng: random.Random) -> HostileRequest:
    text = "".join(rng.choice(INVISIBLE + " \t\n") for _ in range(rng.randrange(1, 400)))
    return HostileRequest("invisible_prompt", _post(json.dumps(_job(rng, prompt=text)).encode()))


def _long(rng: random.Random) -> HostileRequest:
    alphabet = rng.choice(["a", "é", "猫", "🔥", "a\u200b", "ab "])
    text = alphabet * (rng.randrange(1001, 20_000) // len(alphabet) + 1)
    field = rng.choice(["prompt", "negative_prompt", "user", "idempotency_key", "adapter"])
    return HostileRequest("long_text", _post(json.dumps(_job(rng, **{field: text})).encode()))


def _any_json(rng: random.Random, depth: int = 0) -> object:
    pick = rng.randrange(7 if depth < 3 else 5)
    if pick == 0:
        return rng.choice([None, True, False, ""])
    if pick == 1:
        return rng.randrange(-(2**70), 2**70)
    if pick == 2:
        return rng.random() * 10 ** rng.randrange(-5, 300)
    if pick in (3, 4):
        return "".join(chr(rng.randrange(1, 0x2FFFF)) for _ in range(rng.randrange(20)))
    if pick == 5:
        return [_any_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {str(rng.random()): _any_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def _wrong_type(rng: random.Random) -> HostileRequest:
    job = _job(rng, **{rng.choice(FIELDS): _any_json(rng)})
    if rng.random() < 0.3:
        job[rng.choice(["x", "__proto__", "kind ", "Prompt", "\u200bprompt"])] = _any_json(rng)
    body = json.dumps(job, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    return HostileRequest("wrong_type", _post(body))


def _malformed(rng: random.Random) -> HostileRequest:
    valid = json.dumps(_job(rng)).encode()
    body = rng.choice([
        valid[: rng.randrange(len(valid))], os.urandom(rng.randrange(1, 400)), b"\xef\xbb\xbf" + valid,
        valid.replace(b"circle", b"\xff\xfe"), b"", b"null", b"[]", b'"job"', b"1e999", valid + b"garbage",
        valid.replace(b'"user"', b'"user": "a", "user"'), b'{"prompt": "\\ud800"}', b"{" * 5000,
    ])  # fmt: skip
    return HostileRequest("malformed_json", _post(body))


def _path(rng: random.Random, job_id: str) -> HostileRequest:
    junk = rng.choice([
        "9" * rng.randrange(19, 6000), "\u00b2", "٣", "-1", "1e5", "0x1f", " 1", "1 ", "%00", "%ff%fe",
        "".join(chr(rng.randrange(0x80, 0x2FFF)) for _ in range(rng.randrange(1, 30))), "..%2F..%2Fetc",
    ])  # fmt: skip
    from urllib.parse import quote

    q = quote(junk, safe="%")
    path = rng.choice([
        f"/v1/jobs/{job_id}/events?after={q}", f"/v1/jobs/{job_id}/images/{q}", f"/v1/jobs/{q}",
        f"/v1/jobs/{q}/events", f"/v1/jobs/{q}/preview", f"/v1/jobs/{q}/cancel", f"/v1/{q}",
    ])  # fmt: skip
    method = (
        "POST" if path.endswith("/cancel") else rng.choice(["GET", "GET", "GET", "DELETE", "PUT", "PATCH"])
    )
    return HostileRequest("path", _get(path, method))


def _content_type(rng: random.Random) -> HostileRequest:
    ctype = rng.choice(["text/plain", "multipart/form-data", "multipart/form-data; boundary=",
                        "application/x-www-form-urlencoded", "application/json; charset=utf-16", "image/png",
                        "multipart/mixed; boundary=z", "\u00ff/\u00ff"])  # fmt: skip
    return HostileRequest("content_type", _post(json.dumps(_job(rng)).encode(), ctype))


def _multipart(rng: random.Random) -> HostileRequest:
    boundary = "b0undary"

    def part(name: str, data: bytes, ctype: str) -> bytes:
        return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"x\"\r\n"
                f"Content-Type: {ctype}\r\n\r\n").encode() + data + b"\r\n"  # fmt: skip

    edit = json.dumps(_job(rng, kind="edit")).encode()
    variant = rng.randrange(9)
    parts = [
        [part("image", _small_png(), "image/png")],
        [part("job", edit, "application/json"), part("image", _bomb(), "image/png")],
        [part("job", edit, "application/json"), part("image", _small_png()[:60], "image/png")],
        [part("job", edit, "application/json"), part("image", os.urandom(2000), "image/png")],
        [part("job", edit, "application/json"), part("extra", b"x", "text/plain")],
        [part("job", edit, "application/json"), part("job", edit, "application/json")],
        [part("job", b"[" * 30000, "application/json")],
        [part("job", edit, "application/json"), part("image", b"", "image/png")],
        [
            part("job", json.dumps(_job(rng)).encode(), "application/json"),
            part("image", _small_png(), "image/png"),
        ],
    ][variant]
    body = b"".join(parts) + (f"--{boundary}--\r\n".encode() if rng.random() < 0.8 else b"")
    return HostileRequest("multipart", _post(body, f"multipart/form-data; boundary={boundary}"))


def _framing(rng: random.Random) -> HostileRequest:
    """Broken HTTP framing: aiohttp's parser answers these itself (plain text), never a handler."""
    raw = rng.choice([
        b"POST /v1/jobs HTTP/1.1\r\nHost: w\r\nContent-Length: abc\r\n\r\n{}",
        b"POST /v1/jobs HTTP/1.1\r\nHost: w\r\nContent-Length: -5\r\n\r\n{}",
        b"GET /v1/stats HTTP/1.1\r\nHost: w\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
        b"GET /v1/stats HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(300)) + b"\r\n",
        b"POST /v1/jobs HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/json\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: w\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64),
        b"GET /v1/stats HTTP/9.9\r\nHost: w\r\n\r\n",
    ])  # fmt: skip
    return HostileRequest("framing", raw, expects_json=False)


def _conflict(rng: random.Random) -> HostileRequest:
    job = _job(rng, idempotency_key="hostile-fixed-key", prompt=f"a {rng.random()} circle")
    return HostileRequest("idempotency_conflict", _post(json.dumps(job).encode()))


def _lying_length(rng: random.Random) -> HostileRequest:
    body = json.dumps(_job(rng)).encode()
    raw = _post(body).replace(
        f"Content-Length: {len(body)}".encode(), f"Content-Length: {len(body) + 50}".encode()
    )
    return HostileRequest("short_body", raw, wait_s=45.0)


KINDS: list[tuple[Callable[..., HostileRequest], int]] = [
    (_nested, 10), (_number, 10), (_invisible, 10), (_long, 8), (_wrong_type, 14), (_malformed, 10),
    (_path, 14), (_content_type, 5), (_multipart, 10), (_framing, 6), (_conflict, 2), (_lying_length, 1),
]  # fmt: skip


def hostile_requests(rng: random.Random, count: int, job_id: str = "0" * 16) -> Iterator[HostileRequest]:
    makers = [m for m, w in KINDS for _ in range(w)]
    for _ in range(count):
        maker = rng.choice(makers)
        yield maker(rng, job_id) if maker is _path else maker(rng)


async def send_raw(host: str, port: int, raw: bytes, wait_s: float = 10.0) -> tuple[int, bytes]:
    """Send raw bytes on a fresh connection; (status, body) of the answer, status 0 when none came."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return 0, b"connection refused"
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(wait_s):
            data = await reader.read(-1)
    except (OSError, TimeoutError):
        data = b""
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        return int(head.split(b" ", 2)[1]), body
    except (IndexError, ValueError):
        return 0, data[:200]


@functools.cache
def _small_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


@functools.cache
def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def max_size_png(max_bytes: int, side: int = 2048) -> bytes:
    """A `side` x `side` PNG (the most pixels an upload may have) just under `max_bytes`: noise in the top
    rows (incompressible), flat below."""
    low, high, best = 0, side, large_png(side)
    while low <= high:
        rows = (low + high) // 2
        img = Image.new("RGB", (side, side), (30, 90, 200))
        img.paste(Image.frombytes("RGB", (side, rows), os.urandom(side * rows * 3)) if rows else img, (0, 0))
        buf = io.BytesIO()
        img.save(buf, format="PNG", compress_level=1)
        if buf.tell() <= max_bytes - 64 * 1024:
            best, low = buf.getvalue(), rows + 1
        else:
            high = rows - 1
    return best
