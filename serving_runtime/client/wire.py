"""Request bodies and their encoding, shared by local and remote mode.

Both modes turn the caller's arguments into the same JSON bytes; local mode then parses
them with the server's own `parse_json`. That round trip is what makes the two modes give
identical answers and identical errors: numpy arrays, ints, NaN, None all reach the
shared inference code exactly as they would reach the server.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from serving_runtime.errors import InvalidInputError


def _numpy_default(obj: Any) -> Any:
    tolist = getattr(obj, "tolist", None)  # numpy arrays and scalars
    if tolist is not None:
        return tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def encode(body: Any) -> bytes:
    """JSON bytes of `body`. orjson writes NaN/inf as null, which would turn "feature x
    is NaN" into "feature x is not a number"; when the fast output holds a null, encode
    again with the stdlib, which keeps NaN/Infinity literals (the server reads them and
    names the feature)."""
    try:
        data = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        data = b"null"  # e.g. an object orjson refuses: let the stdlib path report it
    if b"null" in data:
        try:
            data = json.dumps(body, default=_numpy_default, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"request body is not JSON serialisable: {exc}") from None
    return data


def predict_body(
    model_name: str, features: Mapping[str, Any], correlation_id: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"model_name": model_name, "features": features}
    if correlation_id is not None:
        body["correlation_id"] = correlation_id
    return body


def batch_body(requests: Sequence[Mapping[str, Any]], batch_size: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"requests": list(requests)}
    if batch_size is not None:
        body["batch_size"] = batch_size
    return body
