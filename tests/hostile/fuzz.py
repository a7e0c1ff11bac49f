"""A property-based fuzz of a live worker from its own OpenAPI document (hypothesis).

Bodies are drawn from the `JobRequest` schema the worker publishes, then mutated (a field swapped for any
JSON value, unknown fields, invisible or oversized text); paths and cursors are drawn as arbitrary text.
The property: no answer is a 5xx, every refusal is a JSON `{code, message}`, every acceptance a valid job.
Shared by tests/hostile/test_fuzz.py (short) and bench/hostile.py (long).
"""

from __future__ import annotations

import http.client
import json
from collections import Counter
from typing import Any
from urllib.parse import quote, urlsplit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference.protocol import JobInfo

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
AWKWARD_TEXT = st.text(
    st.sampled_from("\u200b\u200c\u200d\u2060\ufeff\u202e\u3164\u2800 \t\n") | st.characters(), max_size=60
) | st.builds(lambda c, n: c * n, st.sampled_from("a\u200b "), st.integers(990, 6000))


def job_request_schema(document: dict[str, Any]) -> dict[str, Any]:
    """The JobRequest schema from the worker's OpenAPI document, with its references resolvable."""
    schemas = document["components"]["schemas"]
    text = json.dumps(schemas["JobRequest"]).replace("#/components/schemas/", "#/$defs/")
    return {**json.loads(text), "$defs": json.loads(json.dumps(schemas).replace("#/components/schemas/", "#/$defs/"))}  # fmt: skip


def from_schema(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values for the JSON-schema subset pydantic writes for the protocol's flat models: objects of
    typed properties with bounds, enums by reference, and `anyOf` with null. (hypothesis-jsonschema
    would do this, but does not work with current hypothesis releases.)"""
    if "$ref" in schema:
        return from_schema(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in schema:
        return st.one_of([from_schema(s, defs) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        required = {k: from_schema(props[k], defs) for k in schema.get("required", [])}
        optional = {k: from_schema(v, defs) for k, v in props.items() if k not in required}
        return st.fixed_dictionaries(required, optional=optional)
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 80), 80))
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        return st.floats(
            low, schema.get("maximum"), exclude_min="exclusiveMinimum" in schema, allow_nan=False
        )
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    return JSON


def job_bodies(document: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Schema-valid jobs, and the same with one field broken, extra fields, or awkward text."""
    schema = job_request_schema(document)
    valid = from_schema(schema, schema["$defs"])
    fields = list(document["components"]["schemas"]["JobRequest"]["properties"])

    def broken(job: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
        return {**job, field: value}

    return st.one_of(
        valid,
        st.builds(broken, valid, st.sampled_from(fields), JSON),
        st.builds(broken, valid, st.sampled_from(["prompt", "negative_prompt", "user"]), AWKWARD_TEXT),
        st.builds(
            lambda j, extra: {**extra, **j}, valid, st.dictionaries(st.text(max_size=8), JSON, max_size=3)
        ),
        JSON,
    )


class LiveWorker:
    """A tiny blocking HTTP client for the fuzz (hypothesis drives examples synchronously)."""

    def __init__(self, url: str, token: str | None = None) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []

    def request(self, method: str, path: str, body: bytes | None = None, ctype: str | None = None) -> tuple[int, bytes]:  # fmt: skip
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            headers = {**self.headers, **({"Content-Type": ctype} if ctype else {})}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def check(self, what: str, status: int, payload: bytes) -> None:
        """The property: a clear answer, never a server error."""
        self.statuses[status] += 1
        if status >= 500:
            self.failures.append(f"{what}: {status} {payload[:200]!r}")
        elif status >= 400:
            try:
                body = json.loads(payload)
                assert isinstance(body, dict) and body.get("code") and body.get("message")
            except (ValueError, AssertionError):
                self.failures.append(f"{what}: {status} without a JSON error body: {payload[:200]!r}")

    def submit(self, job: Any) -> None:
        status, payload = self.request("POST", "/v1/jobs", json.dumps(job).encode(), "application/json")
        self.check(f"POST {json.dumps(job)[:200]}", status, payload)
        if status in (200, 201):
            info = JobInfo.model_validate_json(payload)
            self.request("DELETE", f"/v1/jobs/{info.id}")  # keep the worker idle for the next example

    def probe(self, job_id: str, after: str, n: str) -> None:
        for path in (
            f"/v1/jobs/{quote(job_id, safe='')}",
            f"/v1/jobs/{quote(job_id, safe='')}/events?after={quote(after, safe='')}",
            f"/v1/jobs/{quote(job_id, safe='')}/images/{quote(n, safe='')}",
        ):
            status, payload = self.request("GET", path)
            self.check(f"GET {path[:200]}", status, payload)


def fuzz(url: str, examples: int, token: str | None = None) -> LiveWorker:
    """Run `examples` generated bodies and as many generated paths against the worker at `url`."""
    worker = LiveWorker(url, token)
    status, raw = worker.request("GET", "/v1/openapi.json")
    assert status == 200, raw
    document = json.loads(raw)
    options = settings(
        max_examples=examples,
        database=None,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )

    @options
    @given(job_bodies(document))
    def bodies(job: Any) -> None:
        worker.submit(job)

    @options
    @given(
        st.text(max_size=40), st.text(max_size=40) | st.from_regex(r"\A[0-9]{1,6000}\Z"), st.text(max_size=12)
    )
    def paths(job_id: str, after: str, n: str) -> None:
        worker.probe(job_id, after, n)

    bodies()
    paths()
    return worker
