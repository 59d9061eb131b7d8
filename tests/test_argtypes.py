"""Annotation text to JSON Schema, and values (as the manager decodes them) checked against
those schemas: the rules every entry point's argument checks share."""

from __future__ import annotations

from typing import Any

import pytest

from easyjobs.argtypes import check_value, schema_for
from easyjobs.tasks import Param

INT = {"type": "integer"}
NULL = {"type": "null"}

SCHEMAS: list[tuple[str | None, dict[str, Any]]] = [
    (None, {}),
    ("", {}),
    ("str", {"type": "string"}),
    ("int", INT),
    ("float", {"type": "number"}),
    ("bool", {"type": "boolean"}),
    ("None", NULL),
    ("Any", {}),
    ("typing.Any", {}),
    ("'int'", INT),
    ("list", {"type": "array"}),
    ("List", {"type": "array"}),
    ("tuple", {"type": "array"}),
    ("tuple[int, str]", {"type": "array"}),
    ("dict", {"type": "object"}),
    ("Dict", {"type": "object"}),
    ("list[int]", {"type": "array", "items": INT}),
    ("List[str]", {"type": "array", "items": {"type": "string"}}),
    ("typing.List[int]", {"type": "array", "items": INT}),
    ("set[int]", {"type": "array", "items": INT}),
    ("list[list[int]]", {"type": "array", "items": {"type": "array", "items": INT}}),
    ("dict[str, int]", {"type": "object", "additionalProperties": INT}),
    ("Dict[str, list[float]]",
     {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "number"}}}),
    ("Optional[int]", {"anyOf": [INT, NULL]}),
    ("typing.Optional[int]", {"anyOf": [INT, NULL]}),
    ("int | None", {"anyOf": [INT, NULL]}),
    ("None | int", {"anyOf": [NULL, INT]}),
    ("list[int] | None", {"anyOf": [{"type": "array", "items": INT}, NULL]}),
    ("dict[str, int | None] | str",
     {"anyOf": [{"type": "object", "additionalProperties": {"anyOf": [INT, NULL]}},
                {"type": "string"}]}),
    ("Union[int, str]", {"anyOf": [INT, {"type": "string"}]}),
    ("Optional[dict[str, int]]",
     {"anyOf": [{"type": "object", "additionalProperties": INT}, NULL]}),
    ("Optional[Any]", {}),
    ("int | MyClass", {}),
    ("Union[int, MyClass]", {}),
    ("MyClass", {}),
    ("list[MyClass]", {"type": "array", "items": {}}),
    ("Callable[[int], int]", {}),
    ("bytes", {"type": "object", "required": ["$base64"],
               "properties": {"$base64": {"type": "string"}}}),
]


@pytest.mark.parametrize(("annotation", "schema"), SCHEMAS)
def test_schema_for(annotation: str | None, schema: dict[str, Any]) -> None:
    """Each annotation text maps to its JSON Schema; what is not understood accepts anything."""
    assert schema_for(annotation) == schema


CHECKS: list[tuple[str, Any, str | None]] = [
    ("int", 1, None),
    ("int", -(2**70), None),
    ("int", True, "x must be an integer"),
    ("int", 1.0, "x must be an integer"),
    ("int", "1", "x must be an integer"),
    ("int", None, "x must be an integer"),
    ("float", 1, None),
    ("float", 1.5, None),
    ("float", False, "x must be a number"),
    ("float", float("nan"), None),
    ("float", {"$float": "nan"}, "x must be a number"),
    ("str", "", None),
    ("str", 1, "x must be a string"),
    ("bool", False, None),
    ("bool", 0, "x must be a boolean"),
    ("list", [1, "a"], None),
    ("list", (1, "a"), None),
    ("list", {}, "x must be an array"),
    ("dict", {}, None),
    ("dict", [], "x must be an object"),
    ("list[int]", [], None),
    ("list[int]", [1, 2], None),
    ("list[int]", [1, True], "x[1] must be an integer"),
    ("list[list[int]]", [[1], [2, "3"]], "x[1][1] must be an integer"),
    ("dict[str, int]", {"a": 1}, None),
    ("dict[str, int]", {"a": 1, "b": "2"}, "x['b'] must be an integer"),
    ("Optional[int]", None, None),
    ("Optional[int]", 3, None),
    ("Optional[int]", "3", "x does not match any of the allowed types"),
    ("list[int] | None", [1, None], "x does not match any of the allowed types"),
    ("list[int] | None", None, None),
    ("int | str", "3", None),
    ("bytes", b"\x00", None),
    ("bytes", {"$base64": "AA=="}, "x must be bytes"),
    ("bytes", "AA==", "x must be bytes"),
    ("bytes | None", None, None),
    ("MyClass", object(), None),
    (None, [{"any": None}], None),
]


@pytest.mark.parametrize(("annotation", "value", "problem"), CHECKS)
def test_check_value(annotation: str, value: Any, problem: str | None) -> None:
    """A value either matches its parameter's schema (None) or gets one precise reason."""
    assert check_value(schema_for(annotation), value, "x") == problem


@pytest.mark.parametrize(("has_default", "default", "annotation", "value", "problem"), [
    (True, None, "int", None, None),
    (True, None, "int", "1", "x does not match any of the allowed types"),
    (True, 0, "int", None, "x must be an integer"),
    (False, None, "int", None, "x must be an integer"),
    (True, None, "int | None", None, None),
])
def test_a_none_default_admits_none(
    has_default: bool, default: Any, annotation: str, value: Any, problem: str | None
) -> None:
    """``def f(x: int = None)`` takes None for x, as it always has; other defaults do not."""
    param = Param("x", "positional_or_keyword", has_default, default, annotation)
    assert check_value(param.schema(), value, "x") == problem
