"""OpenAPI documents built from the endpoint registry.

The queue and run routes are generic (``{endpoint_id:path}``), so FastAPI cannot see the model
behind each endpoint. Here every registered endpoint gets its own paths, with its fal input and
output models as components named as fal names them (``fal-ai/cogvideox-5b/image-to-video`` ->
``Cogvideox5bImageToVideoInput``). Two documents come out of it:

- ``queue_document``: what fal serves at ``/api/openapi/queue/openapi.json?endpoint_id=...``, the
  queue routes of one endpoint relative to the queue server;
- ``server_document``: everything this server answers, for ``/openapi.json``: FastAPI's own
  description of the fixed routes plus the queue and run routes of every endpoint.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from pipelines.registry import Endpoint
from server.auth import API_KEY_HEADER

OPENAPI_VERSION = "3.1.0"  # the schemas are pydantic's JSON Schema 2020-12 (``null`` in ``anyOf``)
REF = "#/components/schemas/{model}"
SECURITY = [{API_KEY_HEADER.scheme_name: []}]
SECURITY_SCHEMES = {
    API_KEY_HEADER.scheme_name: API_KEY_HEADER.model.model_dump(mode="json", by_alias=True, exclude_none=True)
}

# fal's QueueStatus, with the fields this server always sends typed as it sends them.
QUEUE_STATUS = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]},
        "request_id": {"type": "string", "description": "The request id."},
        "response_url": {"type": "string", "description": "The response url."},
        "status_url": {"type": "string", "description": "The status url."},
        "cancel_url": {"type": "string", "description": "The cancel url."},
        "logs": {
            "anyOf": [{"type": "array", "items": {"$ref": REF.format(model="RequestLog")}}, {"type": "null"}],
            "description": "The logs; null unless asked for with `logs=1`.",
        },
        "metrics": {"type": "object", "description": "The metrics.", "additionalProperties": True},
        "queue_position": {"type": "integer", "description": "The queue position."},
        "gateway_request_id": {"type": "string", "description": "The request id the gateway first gave it."},
        "error": {"type": "string", "description": "Why a completed request failed."},
        "error_type": {"type": "string", "description": "fal's error type of a failed request."},
    },
    "required": ["status", "request_id"],
}
REQUEST_LOG = {
    "type": "object",
    "properties": {
        "message": {"type": "string"},
        "level": {"type": "string", "enum": ["STDERR", "STDOUT", "ERROR", "INFO", "WARN", "DEBUG"]},
        "source": {"type": "string"},
        "timestamp": {"type": "string", "description": "ISO 8601, UTC."},
    },
    "required": ["message", "level", "source", "timestamp"],
}
CANCEL_STATUS = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["CANCELLATION_REQUESTED", "ALREADY_COMPLETED", "NOT_FOUND"]},
    },
    "required": ["status"],
}
ERROR = {
    "type": "object",
    "description": "fal's error shape: `detail` is a message or, for invalid input, pydantic's error list.",
    "properties": {
        "detail": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
        "error_type": {"type": "string"},
    },
    "required": ["detail"],
}
SHARED_COMPONENTS = {
    "QueueStatus": QUEUE_STATUS,
    "RequestLog": REQUEST_LOG,
    "CancelStatus": CANCEL_STATUS,
    "Error": ERROR,
}

REQUEST_ID = {
    "name": "request_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "description": "Request ID"},
}
LOGS = {
    "name": "logs",
    "in": "query",
    "required": False,
    "schema": {
        "anyOf": [{"type": "number"}, {"type": "boolean"}],
        "description": "Whether to include logs (`1` or `true`) in the response or not (`0`).",
    },
}
# fal's platform options on submit and run; the README describes each.
SUBMIT_PARAMETERS = [
    {
        "name": "fal_webhook",
        "in": "query",
        "required": False,
        "schema": {
            "type": "string",
            "format": "uri",
            "pattern": r"^https?://[A-Za-z0-9.-]+([:/?#].*)?$",
            "description": "URL to POST the result to when the request completes.",
        },
    },
    {
        "name": "x-fal-queue-priority",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "enum": ["normal", "low"], "default": "normal"},
    },
    {
        "name": "x-fal-request-timeout",
        "in": "header",
        "required": False,
        "schema": {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "Seconds the request may wait for a worker; then it fails with 504.",
        },
    },
    {
        "name": "x-fal-no-retry",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "description": "`1` or `true`: never re-run the request on another worker."},
    },
    {
        "name": "x-fal-store-io",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "description": "`0`: drop input and output once the result is read."},
    },
    {
        "name": "x-fal-object-lifecycle-preference",
        "in": "header",
        "required": False,
        "description": "Delete the request's output files this many seconds after they are written.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"expiration_duration_seconds": {"type": "integer", "minimum": 1}},
                }
            }
        },
    },
]


def schema_base_name(endpoint_id: str) -> str:
    """fal's component prefix: the id without its owner, each word capitalised (``v1.5`` -> ``V15``)."""
    words = re.split(r"[/\-_.]+", endpoint_id.split("/", 1)[-1])
    return "".join(word[:1].upper() + word[1:] for word in words if word)


def queue_document(endpoint: Endpoint, queue_url: str, playground_url: str) -> dict[str, Any]:
    """fal's per-endpoint queue document: submit, status, status stream, result and cancel."""
    components, names = _components([endpoint])
    input_name, output_name = names[endpoint.id]
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": f"Queue OpenAPI for {endpoint.id}",
            "version": "1.0.0",
            "description": f"The OpenAPI schema for the {endpoint.id} queue.",
            "x-fal-metadata": {"endpointId": endpoint.id, "playgroundUrl": playground_url},
        },
        "components": {"securitySchemes": SECURITY_SCHEMES, "schemas": components},
        "paths": dict(_queue_paths(endpoint.id, "", input_name, output_name)),
        "servers": [{"url": queue_url}],
        "security": SECURITY,
    }


def server_document(app: FastAPI, endpoints: Iterable[Endpoint]) -> dict[str, Any]:
    """FastAPI's description of the fixed routes (``require_key`` marks those that need a key), with
    every endpoint's queue and run routes added."""
    endpoints = list(endpoints)
    document = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    document["openapi"] = OPENAPI_VERSION
    components, names = _components(endpoints)
    document.setdefault("components", {}).setdefault("schemas", {}).update(components)
    document["components"]["securitySchemes"] = SECURITY_SCHEMES
    tags = []
    for endpoint in endpoints:
        input_name, output_name = names[endpoint.id]
        paths = [
            *_queue_paths(endpoint.id, "/queue", input_name, output_name),
            _run_path(endpoint.id, input_name, output_name),
        ]
        for path, item in paths:
            for operation in item.values():
                operation["tags"], operation["security"] = [endpoint.id], SECURITY
            document["paths"][path] = item
        tags.append({"name": endpoint.id, "x-fal-metadata": {"endpointId": endpoint.id}})
    document["tags"] = tags
    return document


def _components(endpoints: list[Endpoint]) -> tuple[dict[str, Any], dict[str, tuple[str, str]]]:
    """The schemas of the endpoints' models, and each endpoint's (input, output) component names.

    Nested models keep their class names, as on fal (``ImageSize``, ``LoraWeight``); where two
    families define different models of one name, each is prefixed with its family
    (``CogvideoxLoraWeight``). Each endpoint's own input and output are copied under fal's names
    (endpoints that share an output model each get theirs, as on fal)."""
    models = [(e.input_model, "validation") for e in endpoints] + [(e.output_model, "serialization") for e in endpoints]
    refs, bundle = models_json_schema(models, ref_template=REF)
    generated: dict[str, Any] = bundle.get("$defs", {})
    # pydantic spells a clash with the whole module path: pipelines__cogvideox__schema__LoraWeight.
    renames = {name: _family_qualified(name) for name in generated if "__" in name}
    generated = {renames.get(name, name): schema for name, schema in generated.items()}
    for node in _dicts(generated):
        if "$ref" in node:
            target = _ref_name(node["$ref"])
            node["$ref"] = REF.format(model=renames.get(target, target))

    def generated_name(model: type[BaseModel], mode: str) -> str:
        target = _ref_name(refs[(model, mode)]["$ref"])
        return renames.get(target, target)

    components: dict[str, Any] = {}
    names: dict[str, tuple[str, str]] = {}
    for endpoint in endpoints:
        base = schema_base_name(endpoint.id)
        names[endpoint.id] = (f"{base}Input", f"{base}Output")
        components[f"{base}Input"] = copy.deepcopy(generated[generated_name(endpoint.input_model, "validation")])
        components[f"{base}Output"] = copy.deepcopy(generated[generated_name(endpoint.output_model, "serialization")])
    # The endpoints' own models now live under fal's names; the rest are the models they nest.
    top_level = {generated_name(model, mode) for model, mode in models}
    referenced = {_ref_name(node["$ref"]) for node in _dicts(generated) if "$ref" in node}
    for name, schema in generated.items():
        if name not in top_level or name in referenced:
            components.setdefault(name, schema)
    for schema in components.values():
        if "properties" in schema:
            schema["x-fal-order-properties"] = list(schema["properties"])
    return {**SHARED_COMPONENTS, **components}, names


def _family_qualified(qualified: str) -> str:
    *module, name = qualified.split("__")
    return "".join(schema_base_name(f"_/{part}") for part in module if part not in ("pipelines", "schema")) + name


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _dicts(value: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in ``value``, outermost first."""
    if isinstance(value, dict):
        yield value
        children: Iterable[Any] = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return
    for child in children:
        yield from _dicts(child)


def _body(schema_name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF.format(model=schema_name)}}}


def _json(schema_name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": _body(schema_name)}


def _errors(*codes: int) -> dict[str, Any]:
    reasons = {
        400: "The request has not completed yet, or has already completed.",
        401: "Missing or invalid API key.",
        404: "Unknown endpoint or request.",
        422: "Invalid input; `detail` lists pydantic's errors with their locations.",
    }
    return {str(code): _json("Error", reasons[code]) for code in codes}


def _queue_paths(
    endpoint_id: str, prefix: str, input_name: str, output_name: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    base = f"{prefix}/{endpoint_id}"
    request = f"{base}/requests/{{request_id}}"
    queued = _json("QueueStatus", "The request status.")
    yield base, {
        "post": {
            "summary": f"Submit a request to {endpoint_id}",
            "parameters": SUBMIT_PARAMETERS,
            "requestBody": {"required": True, "content": _body(input_name)},
            "responses": {"200": queued, **_errors(401, 404, 422)},
        }
    }
    yield f"{request}/status", {
        "get": {
            "summary": "The request's status",
            "parameters": [REQUEST_ID, LOGS],
            "responses": {
                "200": _json("QueueStatus", "The request has completed."),
                "202": _json("QueueStatus", "The request is queued or in progress."),
                **_errors(401, 404),
            },
        }
    }
    yield f"{request}/status/stream", {
        "get": {
            "summary": "The request's status as server-sent events, until it completes",
            "parameters": [REQUEST_ID, LOGS],
            "responses": {
                "200": {
                    "description": "One `data: <QueueStatus JSON>` event per change; each carries only new log lines.",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **_errors(401, 404),
            },
        }
    }
    yield request, {
        "get": {
            "summary": "The request's result",
            "parameters": [REQUEST_ID],
            "responses": {
                "200": _json(output_name, "Result of the request."),
                **_errors(400, 401, 404),
                "default": _json("Error", "The request failed: its error, with the status code it failed with."),
            },
        }
    }
    yield f"{request}/cancel", {
        "put": {
            "summary": "Cancel the request",
            "parameters": [REQUEST_ID],
            "responses": {
                "202": _json("CancelStatus", "Cancellation requested: the request completes with an error."),
                "400": _json("CancelStatus", "The request had already completed."),
                "404": _json("CancelStatus", "Unknown request."),
                **_errors(401),
            },
        }
    }


def _run_path(endpoint_id: str, input_name: str, output_name: str) -> tuple[str, dict[str, Any]]:
    return f"/run/{endpoint_id}", {
        "post": {
            "summary": f"Run {endpoint_id} and wait for the result",
            "parameters": SUBMIT_PARAMETERS,
            "requestBody": {"required": True, "content": _body(input_name)},
            "responses": {
                "200": _json(output_name, "The result."),
                **_errors(401, 404, 422),
                "default": _json("Error", "The request failed: its error, with the status code it failed with."),
            },
        }
    }
