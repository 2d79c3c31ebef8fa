"""Reading requests: JSON bodies and query strings into the classes of
`sandboxer.http.schemas`.

Bodies are structured with a strict copy of the shared `models.converter`:
the same timestamp and enum handling, but no coercion (`5` is not a string,
`"false"` is not a boolean, a string is not a list) and no unknown keys. A
failure is an `InvalidInputError` naming the key path, e.g.
``invalid request body: invalid value for type, expected str @ $.name``.
Query parameters are strings by nature; each is converted by its field's
type (booleans are `true` or `false`, a list field repeats the parameter)
and unknown parameters are refused.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.cols import list_structure_factory, mapping_structure_factory
from cattrs.gen import make_dict_structure_fn
from starlette.datastructures import QueryParams

from sandboxer.errors import InvalidInputError
from sandboxer.models import converter

T = TypeVar("T")


def _make_request_converter() -> cattrs.Converter:
    strict = converter.copy(forbid_extra_keys=True, detailed_validation=True)
    exact_hooks: dict[Any, Callable[[Any, Any], Any]] = {
        str: _exactly(str, "a string"),
        bool: _exactly(bool, "true or false"),
        int: _structure_int,
        float: _structure_float,
        typing.Any: lambda value, _: value,
    }
    for kind, hook in exact_hooks.items():
        strict.register_structure_hook(kind, hook)
    # str enums would otherwise take the str hook above: their MRO has str.
    strict.register_structure_hook(enum.StrEnum, lambda value, kind: kind(value))
    strict.register_structure_hook_factory(
        _is_list,
        lambda kind: _only(list, "a list", list_structure_factory(kind, strict)),
    )
    strict.register_structure_hook_factory(
        _is_dict,
        lambda kind: _only(dict, "an object", mapping_structure_factory(kind, strict)),
    )
    strict.register_structure_hook_factory(
        attrs.has,
        lambda kind: make_dict_structure_fn(
            kind, strict, _cattrs_forbid_extra_keys=True
        ),
    )
    return strict


def _exactly(kind: type[Any], what: str) -> Callable[[Any, Any], Any]:
    def structure(value: Any, _: Any) -> Any:
        if type(value) is not kind:
            raise ValueError(f"expected {what}")
        return value

    return structure


def _only(
    container: type[Any], what: str, structure: Callable[[Any, Any], Any]
) -> Callable[[Any, Any], Any]:
    def checked(value: Any, kind: Any) -> Any:
        if not isinstance(value, container):
            raise ValueError(f"expected {what}")
        return structure(value, kind)

    return checked


def _structure_int(value: Any, _: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected a whole number")
    return value


def _structure_float(value: Any, _: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected a number")
    return float(value)


def _is_list(kind: Any) -> bool:
    return typing.get_origin(kind) is list


def _is_dict(kind: Any) -> bool:
    return typing.get_origin(kind) is dict


request_converter = _make_request_converter()


def structure_request(data: Any, kind: type[T], what: str) -> T:
    """Structure untrusted JSON data into `kind`, or raise InvalidInputError."""
    if not isinstance(data, dict):
        raise InvalidInputError(f"{what} must be a JSON object")
    try:
        return request_converter.structure(data, kind)
    except cattrs.BaseValidationError as error:
        problems = cattrs.transform_error(error, path="$")
        raise InvalidInputError(f"invalid {what}: {'; '.join(problems)}") from None


def parse_json(raw: bytes) -> Any:
    """Decode a JSON request body; no body at all is an empty object."""
    if not raw:
        return {}
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except ValueError as error:
        raise InvalidInputError(f"request body is not valid JSON: {error}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_query(params: QueryParams, kind: type[T]) -> T:
    """Build a query class from the URL's parameters; unknown ones are refused."""
    hints = typing.get_type_hints(kind)
    fields = attrs.fields(typing.cast(Any, kind))
    known = [attribute.name for attribute in fields]
    unknown = sorted(set(params) - set(known))
    if unknown:
        takes = ", ".join(known) or "none"
        raise InvalidInputError(
            f"unknown query parameter {unknown[0]!r}; this route takes {takes}",
            field=unknown[0],
        )
    values: dict[str, Any] = {}
    for attribute in fields:
        if attribute.name not in params:
            continue
        values[attribute.name] = _query_value(
            attribute.name, params.getlist(attribute.name), hints[attribute.name]
        )
    return structure_request(values, kind, "query parameters")


def _query_value(name: str, raw: list[str], kind: Any) -> Any:
    base = without_none(kind)
    if typing.get_origin(base) is list:
        return raw
    value = raw[-1]
    if base is bool:
        return _query_bool(name, value)
    if isinstance(base, type) and issubclass(base, enum.Enum):
        choices = [member.value for member in base]
        if value not in choices:
            raise InvalidInputError(
                f"invalid query parameter {name}={value!r}: use one of "
                f"{', '.join(choices)}",
                field=name,
            )
    return value


def _query_bool(name: str, value: str) -> bool:
    if value in ("true", "false"):
        return value == "true"
    raise InvalidInputError(
        f"invalid query parameter {name}={value!r}: use true or false", field=name
    )


def without_none(kind: Any) -> Any:
    """`X` for an optional type `X | None`; any other type as it is."""
    arguments = [item for item in typing.get_args(kind) if item is not type(None)]
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return arguments[0] if len(arguments) == 1 else kind
    return kind
