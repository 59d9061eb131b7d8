"""The live OpenAPI document, from the advertised task signatures.

Each parameter's schema is ``Param.schema`` (``easyjobs.argtypes``), the one the manager checks
every submit against, so what the document promises is what every entry point checks. Pure
functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from ..tasks import Param, TaskSpec


def parameters_schema(params: Iterable[Param]) -> dict[str, Any]:
    """The JSON body schema of a task call: its keyword-bindable parameters as properties."""
    properties: dict[str, Any] = {}
    required = []
    extra = False
    for p in params:
        if p.kind == "var_keyword":
            extra = True
            continue
        if p.kind in ("var_positional", "positional_only"):
            continue
        schema = p.schema()
        if p.has_default:
            schema = {**schema, "default": p.default} if _jsonable(p.default) else schema
        else:
            required.append(p.name)
        properties[p.name] = schema
    body: dict[str, Any] = {"type": "object", "properties": properties,
                            "additionalProperties": extra}
    if required:
        body["required"] = required
    return body


def _jsonable(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_jsonable(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _jsonable(v) for k, v in value.items())
    return False


_ERROR = {"$ref": "#/components/schemas/Error"}
_JOB = {"$ref": "#/components/schemas/Job"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "invalid JSON", 401: "missing or wrong token",
            403: "the credential's role or queues do not allow it", 404: "not found",
            413: "body over the size limit", 422: "arguments do not bind"}
    return {str(code): _json(_ERROR, text[code]) for code in codes}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def document(specs: Iterable[TaskSpec], title: str = "easyjobs manager") -> dict[str, Any]:
    """The OpenAPI 3.1 document: one operation per advertised task, plus the fixed routes."""
    paths: dict[str, Any] = {}
    for spec in sorted(specs, key=lambda s: (s.queue, s.name)):
        accepted = {"type": "object", "required": ["job_id", "status"],
                    "properties": {"job_id": {"type": "string"}, "status": {"type": "string"},
                                   "result": {}, "error": {"type": "object"}}}
        paths[f"/{spec.queue}/task/{spec.name}"] = {"post": {
            "operationId": f"run:{spec.queue}:{spec.name}",  # ":" is in no name
            "summary": f"Create a {spec.name} job in queue {spec.queue}",
            "tags": [spec.queue],
            "parameters": [_query("wait", {"type": "number", "minimum": 0, "maximum": 300},
                                  "seconds to wait for the result")],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": parameters_schema(spec.params)}}},
            "responses": {
                "200": _json(accepted, "finished within ?wait (failed jobs too)"),
                "202": _json(accepted, "queued (or still running after ?wait)"),
                **_errors(400, 401, 403, 404, 413, 422),
            },
        }}
    one_worker = {"required": False, "content": {"application/json": {"schema": {
        "type": "object", "properties": {"worker": {
            "type": "string", "description": "one worker's id; without it, every worker"}}}}}}
    job_path = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
    paths.update({
        "/healthz": {"get": {"operationId": "healthz", "security": [],
                             "responses": {"200": _json({"type": "object"}, "serving")}}},
        "/jobs": {"get": {
            "operationId": "list_jobs",
            "parameters": [
                _query("queue", {"type": "string"}, "only this queue"),
                _query("task", {"type": "string"}, "only this task"),
                _query("status", {"type": "string", "enum": [
                    "waiting", "queued", "running", "retrying", "succeeded", "failed",
                    "cancelled"]}, "only this status"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size"),
                _query("cursor", {"type": "string"}, "the next cursor of the previous page"),
            ],
            "responses": {"200": _json({"type": "object", "properties": {
                "jobs": {"type": "array", "items": _JOB},
                "next": {"type": ["string", "null"]}}}, "newest first"),
                **_errors(400, 401, 403)},
        }},
        "/jobs/{job_id}": {"get": {"operationId": "get_job", "parameters": [job_path],
                                   "responses": {"200": _json(_JOB, "the job"),
                                                 **_errors(401, 403, 404)}}},
        "/jobs/{job_id}/result": {"get": {
            "operationId": "get_result",
            "parameters": [job_path, _query("timeout", {"type": "number", "minimum": 0,
                                                        "maximum": 300}, "seconds to wait")],
            "responses": {"200": _json({"type": "object"}, "succeeded"),
                          "202": _json({"type": "object"}, "not finished in time"),
                          "409": _json({"type": "object"}, "cancelled"),
                          "424": _json({"type": "object"}, "failed"),
                          **_errors(400, 401, 403, 404)},
        }},
        "/jobs/{job_id}/cancel": {"post": {
            "operationId": "cancel_job", "parameters": [job_path],
            "responses": {"200": _json(_JOB, "the job afterwards"), **_errors(401, 403, 404)}}},
        "/workers": {"get": {"operationId": "list_workers",
                             "responses": {"200": _json({"type": "object"}, "workers"),
                                           **_errors(401, 403)}}},
        "/workers/pause": {"post": {"operationId": "pause_workers", "requestBody": one_worker,
                                    "responses": {"200": _json({"type": "object"}, "paused"),
                                                  **_errors(400, 401, 403, 404, 422)}}},
        "/workers/resume": {"post": {"operationId": "resume_workers", "requestBody": one_worker,
                                     "responses": {"200": _json({"type": "object"}, "resumed"),
                                                   **_errors(400, 401, 403, 404, 422)}}},
        "/queues": {"get": {"operationId": "list_queues",
                            "responses": {"200": _json({"type": "object"}, "queues"),
                                          **_errors(401, 403)}}},
        "/credentials": {
            "get": {"operationId": "list_credentials",
                    "responses": {"200": _json({"type": "object"}, "names, roles, queues"),
                                  **_errors(401, 403)}},
            "post": {"operationId": "add_credential", "requestBody": {
                "required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["name", "role"], "properties": {
                        "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                        "role": {"type": "string", "enum": ["worker", "client", "admin"]},
                        "queues": {"type": "array", "items": {"type": "string"}}}}}}},
                "responses": {"201": _json({"type": "object"}, "the credential and its token,"
                                                                " shown once"),
                              **_errors(401, 403, 422)}},
        },
        "/credentials/{name}": {"delete": {
            "operationId": "revoke_credential",
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": _json({"type": "object"}, "revoked; its links are closed"),
                          **_errors(401, 403, 404)}}},
    })
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "paths": paths,
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"],
                          "properties": {"error": {"type": "object"}}},
                "Job": {"type": "object", "required": ["id", "status"]},
            },
        },
    }
