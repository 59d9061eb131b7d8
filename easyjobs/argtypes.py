"""What an annotation allows: JSON Schema from its text, and a value checked against that.

Workers advertise each parameter's annotation as text (``"int"``, ``"list[str]"``,
``"Optional[dict]"``...). ``schema_for`` turns the common ones into JSON Schema (the HTTP API's
OpenAPI document shows them); anything else, or no annotation, accepts any value. The manager
checks every submitted argument with ``check_value``, whether it came from Python, the CLI or
HTTP, so all of them refuse the same calls with the same words. Pure functions.
"""

from __future__ import annotations

import re
from typing import Any

BYTES: dict[str, Any] = {"type": "object", "required": ["$base64"],
                         "properties": {"$base64": {"type": "string"}}}
"""``bytes``: ``{"$base64": ...}`` in JSON (``easyjobs.jsonvalues``), bytes once decoded."""

_SCALARS: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "bytes": BYTES,
    "None": {"type": "null"},
    "NoneType": {"type": "null"},
    "Any": {},
    "typing.Any": {},
}
_GENERIC = re.compile(r"^(?:typing\.)?(\w+)\[(.*)\]$")


def _split(args: str, separator: str = ",") -> list[str]:
    """Split ``"str, list[int]"`` at top-level commas (or ``separator``)."""
    parts, depth, current = [], 0, ""
    for char in args:
        if char == separator and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        depth += char == "["
        depth -= char == "]"
        current += char
    parts.append(current.strip())
    return [p for p in parts if p]


def schema_for(annotation: str | None) -> dict[str, Any]:
    """JSON Schema for an annotation's text; ``{}`` (anything) when it is not understood."""
    if not annotation:
        return {}
    text = annotation.strip().strip("'\"")
    union = _split(text, "|")
    if len(union) > 1:
        options = [schema_for(part) for part in union]
        return {} if {} in options else {"anyOf": options}
    if text in _SCALARS:
        return dict(_SCALARS[text])
    if text in ("list", "List", "typing.List", "tuple", "Tuple"):
        return {"type": "array"}
    if text in ("dict", "Dict", "typing.Dict"):
        return {"type": "object"}
    match = _GENERIC.match(text)
    if match is None:
        return {}
    name, args = match.group(1), _split(match.group(2))
    if name == "Optional" and len(args) == 1:
        inner = schema_for(args[0])
        return {} if inner == {} else {"anyOf": [inner, {"type": "null"}]}
    if name == "Union":
        options = [schema_for(arg) for arg in args]
        return {} if {} in options else {"anyOf": options}
    if name in ("list", "List", "Sequence", "set", "Set", "frozenset") and len(args) == 1:
        return {"type": "array", "items": schema_for(args[0])}
    if name in ("tuple", "Tuple"):
        return {"type": "array"}
    if name in ("dict", "Dict", "Mapping") and len(args) == 2:
        return {"type": "object", "additionalProperties": schema_for(args[1])}
    return {}


_KINDS: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "null": (type(None),), "array": (list, tuple), "object": (dict,),
}


def check_value(schema: dict[str, Any], value: Any, where: str) -> str | None:
    """Why ``value`` (as msgpack decodes it, or ``jsonvalues.from_json`` makes it) does not
    match ``schema`` (the subset ``schema_for`` makes), or None."""
    if "anyOf" in schema:
        if any(check_value(option, value, where) is None for option in schema["anyOf"]):
            return None
        return f"{where} does not match any of the allowed types"
    if schema == BYTES:
        return None if isinstance(value, bytes) else f"{where} must be bytes"
    expected = schema.get("type")
    if expected is not None:
        is_bool = isinstance(value, bool)
        if not isinstance(value, _KINDS[expected]) or (
            is_bool and expected in ("integer", "number")
        ):
            return f"{where} must be {'an' if expected[0] in 'aeiou' else 'a'} {expected}"
    if expected == "array" and "items" in schema:
        for i, item in enumerate(value):
            problem = check_value(schema["items"], item, f"{where}[{i}]")
            if problem:
                return problem
    if expected == "object" and "additionalProperties" in schema:
        for key, item in value.items():
            problem = check_value(schema["additionalProperties"], item, f"{where}[{key!r}]")
            if problem:
                return problem
    return None
