"""The worker describes itself (/v1/openapi.json) and survives a property-based fuzz generated from it."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from inference.openapi import openapi_document
from inference.protocol import JobRequest
from inference.server import create_app
from inference.settings import WorkerSettings
from tests.hostile.fuzz import LiveWorker, fuzz, job_request_schema
from tests.hostile.tools import WorkerProcess, free_port, write_config

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    tmp = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    config = write_config(
        tmp / "config.toml", port=port, database=tmp / "bf.sqlite3", worker={"max_batch": 1}
    )
    running = asyncio.run(WorkerProcess(config, port).start())
    try:
        yield running
    finally:
        running.stop()


def test_the_document_is_generated_from_the_protocol_models(tiny_engine: Any) -> None:
    document = openapi_document()
    schema = job_request_schema(document)
    Draft202012Validator.check_schema(schema)
    assert schema["properties"].keys() == JobRequest.model_fields.keys()
    assert schema["properties"]["prompt"]["maxLength"] == 1000
    refs = set(re.findall(r"#/components/schemas/(\w+)", json.dumps(document)))
    assert refs <= document["components"]["schemas"].keys()
    # Every route the worker serves under /v1 is described.
    app = create_app(WorkerSettings(), tiny_engine)
    served = {r.resource.canonical for r in app.router.routes() if r.resource and r.resource.canonical.startswith("/v1")}  # fmt: skip
    assert served <= document["paths"].keys() | {"/v1/openapi.json"}


def test_the_live_worker_serves_its_document(worker: WorkerProcess) -> None:
    status, raw = LiveWorker(worker.url).request("GET", "/v1/openapi.json")
    assert status == 200 and json.loads(raw) == openapi_document()


def test_a_fuzz_from_the_document_finds_no_server_error(worker: WorkerProcess) -> None:
    result = fuzz(worker.url, examples=40)
    assert not result.failures, result.failures[:5]
    assert sum(result.statuses.values()) >= 80
    assert any(400 <= s < 500 for s in result.statuses)  # it did reach the refusals
