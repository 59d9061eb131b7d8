"""The pure rules behind the OpenAPI document: a task's request body schema, and a valid
document whatever the names (annotations to schemas: ``tests/test_argtypes.py``)."""

from __future__ import annotations

from openapi_spec_validator import validate

from easyjobs.argtypes import schema_for
from easyjobs.manager.openapi import document, parameters_schema
from easyjobs.tasks import Param, TaskSpec


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
