"""The pure rules behind the OpenAPI document and the HTTP API's 422 answers: annotation text to
JSON Schema, values checked against those schemas, and a task's request body schema."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_spec_validator import validate

from easyjobs.manager.openapi import check_value, document, parameters_schema, schema_for
from easyjobs.tasks import Param, TaskSpec

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
    ("float", {"$float": "nan"}, None),
    ("float", {"other": 1}, "x must be a number"),
    ("str", "", None),
    ("str", 1, "x must be a string"),
    ("bool", False, None),
    ("bool", 0, "x must be a boolean"),
    ("list", [1, "a"], None),
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
    ("bytes", {"$base64": "AA=="}, None),
    ("bytes", {}, "x must have the key '$base64'"),
    ("bytes", "AA==", "x must be an object"),
    ("MyClass", object(), None),
    (None, [{"any": None}], None),
]


@pytest.mark.parametrize(("annotation", "value", "problem"), CHECKS)
def test_check_value(annotation: str, value: Any, problem: str | None) -> None:
    """A value either matches its parameter's schema (None) or gets one precise reason."""
    assert check_value(schema_for(annotation), value, "x") == problem


def test_parameters_schema_binds_like_a_keyword_call() -> None:
    """Keyword-bindable parameters become properties; defaults and **kwargs are honoured."""
    params = (
        Param("pos", "positional_only", annotation="int"),
        Param("a", "positional_or_keyword", annotation="str"),
        Param("b", "positional_or_keyword", True, 2, "int"),
        Param("rest", "var_positional", annotation="int"),
        Param("kw", "keyword_only", True, b"raw", "bytes"),
        Param("nan", "keyword_only", True, float("nan"), "float"),
        Param("items", "keyword_only", True, [1, {"k": None}], None),
    )
    assert parameters_schema(params) == {
        "type": "object",
        "properties": {
            "a": {"type": "string"},
            "b": {"type": "integer", "default": 2},
            "kw": schema_for("bytes"),  # a bytes default is not JSON: left out
            "nan": {"type": "number"},  # nor is NaN
            "items": {"default": [1, {"k": None}]},
        },
        "required": ["a"],
        "additionalProperties": False,
    }
    extra = parameters_schema((Param("kwargs", "var_keyword"),))
    assert extra == {"type": "object", "properties": {}, "additionalProperties": True}


def test_document_is_valid_openapi_whatever_the_names() -> None:
    """Task and queue names that differ only by separators still get distinct operations."""
    specs = [
        TaskSpec("b_c", "a", (Param("x", "positional_or_keyword", annotation="int"),)),
        TaskSpec("c", "a_b", ()),
        TaskSpec("c", "a.b", (Param("y", "keyword_only", True, float("inf"), "float"),)),
        TaskSpec("b.c", "a", ()),
    ]
    doc = document(specs)
    validate(doc)
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    assert {"/a/task/b_c", "/a_b/task/c", "/a.b/task/c", "/a/task/b.c"} <= set(doc["paths"])
