"""Job values as JSON and back, for the CLI and the HTTP API.

msgpack carries bytes, non-finite floats and non-string map keys; JSON does not. Bytes travel
as ``{"$base64": "..."}`` and NaN and the infinities as ``{"$float": "nan" | "inf" | "-inf"}``,
both ways; map keys become strings on the way out.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def to_json(value: Any) -> Any:
    """A msgpack value as JSON: bytes and non-finite floats tagged, map keys strings."""
    if isinstance(value, bytes):
        return {"$base64": base64.b64encode(value).decode()}
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": repr(value)}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


def from_json(value: Any) -> Any:
    """A JSON value for a job, tags decoded (``ValueError`` if one is invalid)."""
    if isinstance(value, list):
        return [from_json(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("$base64"), str):
            try:
                return base64.b64decode(value["$base64"], validate=True)
            except binascii.Error:
                raise ValueError("$base64 is not valid base64") from None
        if len(value) == 1 and isinstance(value.get("$float"), str):
            if value["$float"] not in _FLOATS:
                raise ValueError('$float must be "nan", "inf" or "-inf"')
            return _FLOATS[value["$float"]]
        return {k: from_json(v) for k, v in value.items()}
    return value
