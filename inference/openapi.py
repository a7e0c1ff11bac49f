"""The worker's RPC described as OpenAPI 3.1, generated from the protocol's pydantic models (no torch)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from inference.protocol import API_PREFIX, ErrorBody, JobEvent, JobInfo, JobRequest, WorkerInfo, WorkerStats

_MODELS: tuple[type[BaseModel], ...] = (JobRequest, JobInfo, JobEvent, ErrorBody, WorkerStats, WorkerInfo)
_ERRORS = {
    "400": "Refused input: a JSON `ErrorBody`",
    "401": "Missing or wrong bearer token",
    "404": "No such job",
    "408": "The body did not arrive in time",
    "409": "Idempotency key reused for a different job",
    "410": "The image was fetched and its grace has passed, or the result budget dropped it",
    "413": "Body or image over the limit",
    "415": "Neither JSON nor multipart",
    "429": "Queue or input budget full; see Retry-After",
    "503": "Shutting down",
}


def openapi_document(version: str = "1") -> dict[str, Any]:
    """The `/v1` RPC as an OpenAPI document; every schema comes from the models the worker validates with."""
    _, defs = models_json_schema(
        [(m, "validation") for m in _MODELS], ref_template="#/components/schemas/{model}"
    )
    schemas = defs["$defs"]
    job_id = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
    paths = {
        f"{API_PREFIX}/jobs": {
            "post": {
                "summary": "Queue a job (JSON, or multipart with a `job` part and an `image` part)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _ref("JobRequest")},
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["job"],
                                "properties": {
                                    "job": _ref("JobRequest"),
                                    "image": {"type": "string", "format": "binary"},
                                },
                            }
                        },
                    },
                },
                "responses": {
                    "201": _json("The job, queued", "JobInfo"),
                    "200": _json("The same job, resubmitted with its idempotency key", "JobInfo"),
                    **_errors(),
                },
            }
        },
        f"{API_PREFIX}/jobs/{{job_id}}": {
            "get": _op("A job's state", "JobInfo", [job_id]),
            "delete": _op("Cancel a job", "JobInfo", [job_id]),
        },
        f"{API_PREFIX}/jobs/{{job_id}}/cancel": {"post": _op("Cancel a job", "JobInfo", [job_id])},
        f"{API_PREFIX}/jobs/{{job_id}}/events": {
            "get": {
                "summary": "The job's events as NDJSON, one `JobEvent` a line; `after` resumes",
                "parameters": [
                    job_id,
                    {
                        "name": "after",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "maximum": 10**18 - 1},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "NDJSON",
                        "content": {"application/x-ndjson": {"schema": _ref("JobEvent")}},
                    },
                    **_errors(),
                },
            }
        },
        f"{API_PREFIX}/jobs/{{job_id}}/images/{{n}}": {
            "get": {
                "summary": "Image `n` of a finished job, in the job's `output_format` (PNG by default)",
                "parameters": [
                    job_id,
                    {
                        "name": "n",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 0},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The image, with its generation metadata",
                        "content": {"image/png": {}, "image/webp": {}, "image/jpeg": {}},
                    },
                    **_errors(),
                },
            }
        },
        f"{API_PREFIX}/jobs/{{job_id}}/preview": {
            "get": {
                "summary": "The newest preview of a running job, as JPEG (204: none yet)",
                "parameters": [job_id],
                "responses": {
                    "200": {"description": "JPEG", "content": {"image/jpeg": {}}},
                    "204": {"description": "No preview"},
                    **_errors(),
                },
            }
        },
        f"{API_PREFIX}/stats": {"get": _op("Queue and throughput", "WorkerStats", [])},
        f"{API_PREFIX}/info": {"get": _op("The model served and its defaults", "WorkerInfo", [])},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "brushfire worker RPC", "version": version},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(description: str, model: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _errors() -> dict[str, Any]:
    return {status: _json(text, "ErrorBody") for status, text in _ERRORS.items()}


def _op(summary: str, model: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": parameters,
        "responses": {"200": _json(summary, model), **_errors()},
    }
