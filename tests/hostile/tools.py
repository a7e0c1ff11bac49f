"""Hostile tooling shared by the tests and bench/hostile.py: a worker in its own process, its memory, and
the slow, large and malformed requests a hostile client sends."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, *, port: int, database: Path, worker: dict[str, Any] | None = None) -> Path:
    """A TOML config: the bundled tiny model on the CPU (one thread), `worker` keys laid over."""
    lines = [
        "[database]",
        f'path = "{database}"',
        "[worker]",
        f"port = {port}",
        *(f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"' for k, v in (worker or {}).items()),
        "[engine]",
        'device = "cpu"',
        "cpu_threads = 1",
        "safety_checker = false",
        "[limits]",
        "worker_grace_s = 5.0",
        "job_timeout_s = 120.0",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def python_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


async def healthy(url: str, timeout: float = 2.0) -> bool:  # noqa: ASYNC109 - a probe's own deadline
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(f"{url}/healthz") as resp,
        ):
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


@dataclass
class WorkerProcess:
    """`python run.py worker` in its own process on a free port."""

    config: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 300.0) -> WorkerProcess:  # noqa: ASYNC109
        self.proc = subprocess.Popen(  # noqa: ASYNC220 - Popen returns at once
            [sys.executable, str(ROOT / "run.py"), "--config", str(self.config), "worker"],
            cwd=self.config.parent,
            env=python_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not await healthy(self.url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()  # leave nothing behind
                raise RuntimeError(f"the worker did not start (exit code {self.proc.poll()})")
            await asyncio.sleep(0.2)
        return self

    def rss_mb(self) -> float:
        assert self.proc is not None
        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def large_png(side: int = 2048) -> bytes:
    """A `side` x `side` picture that compresses to a few KB as PNG (a flat background with a block)."""
    img = Image.new("RGB", (side, side), (30, 90, 200))
    img.paste((240, 200, 20), (side // 4, side // 4, side // 2, side // 2))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def noise_png(side: int = 1800) -> bytes:
    """A picture that barely compresses: near the largest upload a worker accepts (about 9.7 MB)."""
    img = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def edit_form(job: dict[str, Any], image: bytes) -> aiohttp.FormData:
    import json

    form = aiohttp.FormData()
    form.add_field("job", json.dumps(job), content_type="application/json")
    form.add_field("image", image, content_type="application/octet-stream", filename="in.png")
    return form


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def half_sent_requests(host: str, port: int, count: int, *, body: bool = False) -> list[Conn]:
    """Open `count` connections that each send part of a request and then stall.

    Without `body`: a request head cut off before its blank line. With `body`: a full head that declares a
    body of 10,000 bytes, then only 10 of them.
    """
    conns = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection(host, port)
        if body:
            writer.write(
                b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 10000\r\n\r\n{"prompt":'
            )
        else:
            writer.write(b"GET /v1/stats HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        await writer.drain()
        conns.append((reader, writer))
    return conns


async def closed_within(conns: list[Conn], seconds: float) -> int:
    """How many of the connections the server closed within `seconds` (reading whatever it answered)."""

    async def closed(reader: asyncio.StreamReader) -> bool:
        try:
            async with asyncio.timeout(seconds):
                while await reader.read(65536):
                    pass
            return True
        except TimeoutError:
            return False
        except OSError:
            return True

    results = await asyncio.gather(*(closed(r) for r, _ in conns))
    for _, writer in conns:
        writer.close()
    return sum(results)
