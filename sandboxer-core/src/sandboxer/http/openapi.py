"""The OpenAPI 3.1 document, generated from the endpoint table.

Nothing here is written by hand per route: paths, parameters, request
bodies and responses come from the `Endpoint` records in
`sandboxer.http.routes`, and every JSON schema from the attrs classes those
records name (`sandboxer.http.schemas` and `sandboxer.models`), through
`SchemaRegistry`. Constraints and descriptions come from each field's
metadata (``{"description": ..., "json_schema": {...}}``).

In a request schema a field is required when it has no default; in a
response schema every field is required, because responses always carry
every field (null when empty).
"""

from __future__ import annotations

import enum
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import attrs

from sandboxer import __version__
from sandboxer.http.endpoints import JSON, Endpoint
from sandboxer.http.parsing import without_none
from sandboxer.http.schemas import REFERENCE, ErrorResponse, NoBody

ERROR_DESCRIPTIONS = {
    400: "Not supported by the extension that owns the sandbox (`unsupported`).",
    401: "Missing or wrong bearer token (`unauthorized`).",
    404: "No such sandbox, snapshot, profile or file (`not_found`).",
    409: "Clashes with the current state: a taken name, a sandbox not ready, "
    "a pending snapshot (`conflict`).",
    413: "The JSON body is too large (`payload_too_large`).",
    422: "Malformed or invalid input (`invalid_input`, `unsafe_archive`, "
    "`invalid_config`).",
    500: "A bug in the server (`internal`); the server log has the details.",
    503: "The backend failed or is unavailable (`backend_failure`, "
    "`extension_unavailable`, `store_unavailable`).",
}

DESCRIPTION = """\
Disposable sandboxes: the same operations as the `sandboxer` CLI.

Every route but `/v1/health` needs `Authorization: Bearer TOKEN` when the
server has a token. Errors are `{"error": {"code", "message", "details"}}`
with a stable `code`. `POST .../exec` answers one JSON document, or, with
`"stream": true` or `Accept: application/x-ndjson`, NDJSON events while the
command runs. File transfers are tar streams (`application/x-tar`).
"""


class SchemaRegistry:
    """JSON schemas of Python types, with attrs classes and enums as components."""

    def __init__(self) -> None:
        self.components: dict[str, dict[str, Any]] = {}
        self._modes: dict[str, str] = {}

    def schema(self, kind: Any, *, request: bool) -> dict[str, Any]:
        """The schema of `kind`; records are `$ref`s to components."""
        if kind is Any:
            return {}
        if kind is type(None):
            return {"type": "null"}
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            return self._union(typing.get_args(kind), request=request)
        origin = typing.get_origin(kind)
        if origin in (list, tuple):
            item = typing.get_args(kind)[0]
            return {"type": "array", "items": self.schema(item, request=request)}
        if origin is dict:
            value = typing.get_args(kind)[1]
            if value is Any:
                return {"type": "object"}
            return {
                "type": "object",
                "additionalProperties": self.schema(value, request=request),
            }
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            return self._component(kind, request, self._enum)
        if attrs.has(kind):
            return self._component(kind, request, self._record)
        if kind is datetime:
            return {"type": "string", "format": "date-time"}
        simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
        if kind in simple:
            return {"type": simple[kind]}
        raise TypeError(f"no JSON schema for {kind!r}")

    def _union(self, members: tuple[Any, ...], *, request: bool) -> dict[str, Any]:
        schemas = [self.schema(member, request=request) for member in members]
        nullable = {"type": "null"} in schemas
        others = [schema for schema in schemas if schema != {"type": "null"}]
        if nullable and len(others) == 1 and isinstance(others[0].get("type"), str):
            return {**others[0], "type": [others[0]["type"], "null"]}
        return {"anyOf": schemas}

    def _component(
        self,
        kind: type[Any],
        request: bool,
        build: Callable[[Any, bool], dict[str, Any]],
    ) -> dict[str, Any]:
        name = kind.__name__
        mode = "request" if request else "response"
        if name not in self.components:
            self._modes[name] = mode
            self.components[name] = build(kind, request)
        elif attrs.has(kind) and self._modes[name] != mode:
            # Required fields differ between the two, so one schema cannot serve.
            raise TypeError(f"{name} is used in both requests and responses")
        return {"$ref": f"#/components/schemas/{name}"}

    def _enum(self, kind: type[enum.Enum], request: bool) -> dict[str, Any]:
        return {"type": "string", "enum": [member.value for member in kind]}

    def _record(self, kind: type[Any], request: bool) -> dict[str, Any]:
        hints = typing.get_type_hints(kind)
        properties = {}
        required = []
        for attribute in attrs.fields(kind):
            properties[attribute.name] = self.field_schema(
                attribute, hints[attribute.name], request=request
            )
            if not request or attribute.default is attrs.NOTHING:
                required.append(attribute.name)
        schema: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        }
        description = inspect.getdoc(kind)
        if description and not description.startswith(f"{kind.__name__}("):
            schema["description"] = description
        return schema

    def field_schema(
        self, attribute: attrs.Attribute[Any], kind: Any, *, request: bool
    ) -> dict[str, Any]:
        schema = dict(self.schema(kind, request=request))
        extra = dict(attribute.metadata.get("json_schema", {}))
        if "$ref" in schema and extra:
            schema = {"allOf": [schema]}
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(schema.get(key), dict):
                value = {**schema[key], **value}
            schema[key] = value
        if attribute.metadata.get("description"):
            schema["description"] = attribute.metadata["description"]
        return schema


def build_openapi(endpoints: Iterable[Endpoint]) -> dict[str, Any]:
    """The OpenAPI 3.1 document describing `endpoints`."""
    registry = SchemaRegistry()
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        operation = _operation(endpoint, registry)
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sandboxer",
            "version": __version__,
            "description": DESCRIPTION,
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(registry.components.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _operation(endpoint: Endpoint, registry: SchemaRegistry) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": endpoint.operation_id,
        "summary": endpoint.summary,
    }
    description = inspect.getdoc(endpoint.handler)
    if description:
        operation["description"] = description
    parameters = _path_parameters(endpoint.path) + _query_parameters(endpoint, registry)
    if parameters:
        operation["parameters"] = parameters
    body = _request_body(endpoint, registry)
    if body:
        operation["requestBody"] = body
    operation["responses"] = _responses(endpoint, registry)
    if endpoint.public:
        operation["security"] = []
    return operation


def _path_parameters(path: str) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", **REFERENCE},
        }
        for name in re.findall(r"{(\w+)}", path)
    ]


def _query_parameters(
    endpoint: Endpoint, registry: SchemaRegistry
) -> list[dict[str, Any]]:
    hints = typing.get_type_hints(endpoint.query)
    parameters = []
    for attribute in attrs.fields(endpoint.query):
        # An absent parameter is how a query says "none": no null in its schema.
        kind = without_none(hints[attribute.name])
        schema = registry.field_schema(attribute, kind, request=True)
        description = schema.pop("description", "")
        parameter: dict[str, Any] = {
            "name": attribute.name,
            "in": "query",
            "required": attribute.default is attrs.NOTHING,
            "schema": schema,
        }
        if description:
            parameter["description"] = description
        if typing.get_origin(kind) is list:
            parameter["style"] = "form"
            parameter["explode"] = True
        parameters.append(parameter)
    return parameters


def _request_body(
    endpoint: Endpoint, registry: SchemaRegistry
) -> dict[str, Any] | None:
    if endpoint.raw_body is not None:
        return {
            "required": True,
            "content": {
                endpoint.raw_body: {"schema": {"type": "string", "format": "binary"}}
            },
        }
    if endpoint.body is NoBody:
        return None
    required = any(
        field.default is attrs.NOTHING for field in attrs.fields(endpoint.body)
    )
    return {
        "required": required,
        "content": {JSON: {"schema": registry.schema(endpoint.body, request=True)}},
    }


def _responses(endpoint: Endpoint, registry: SchemaRegistry) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, reply in endpoint.responses.items():
        if reply.json_schema is not None:
            schema = dict(reply.json_schema)
        else:
            schema = registry.schema(reply.model, request=False)
        content = {reply.media_type: {"schema": schema}}
        for media_type, model in reply.also.items():
            content[media_type] = {"schema": registry.schema(model, request=False)}
        responses[str(status)] = {"description": reply.description, "content": content}
    error_schema = registry.schema(ErrorResponse, request=False)
    for status in sorted(_error_statuses(endpoint)):
        response: dict[str, Any] = {
            "description": ERROR_DESCRIPTIONS[status],
            "content": {JSON: {"schema": error_schema}},
        }
        if status == 401:
            response["headers"] = {
                "WWW-Authenticate": {
                    "description": "Always `Bearer`.",
                    "schema": {"type": "string"},
                }
            }
        responses[str(status)] = response
    return responses


def _error_statuses(endpoint: Endpoint) -> set[int]:
    statuses = set(endpoint.errors) | {500}
    if not endpoint.public:
        statuses.add(401)
    if attrs.fields(endpoint.query) or endpoint.body is not NoBody:
        statuses.add(422)
    if endpoint.body is not NoBody:
        statuses.add(413)
    return statuses
