"""Reading request bodies with a size limit, and building JSON responses with orjson."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from serving_runtime.errors import PayloadTooLargeError

JSON = "application/json"


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or PayloadTooLargeError (413) as soon as it exceeds `limit`:
    a declared Content-Length is refused before reading, a chunked body while streaming."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(
            f"request body of {declared} bytes exceeds the limit of {limit} bytes "
            f"(MAX_BODY_BYTES)"
        )
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(
                f"request body exceeds the limit of {limit} bytes (MAX_BODY_BYTES)"
            )
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def json_response(
    content: Any, status_code: int = 200, correlation_id: str | None = None
) -> Response:
    headers = {"x-correlation-id": correlation_id} if correlation_id else None
    return Response(orjson.dumps(content), status_code=status_code, media_type=JSON,
                    headers=headers)
