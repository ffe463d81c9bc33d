"""Reading request bodies with a size limit, and writing JSON responses with orjson —
as Starlette Responses (FastAPI routes) or as raw ASGI messages (the hot path)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Send

from serving_runtime.errors import ClientDisconnectedError, PayloadTooLargeError
from serving_runtime.models.inference import valid_correlation_id

JSON = "application/json"


def is_v2_path(path: str) -> bool:
    """A route of the Open Inference Protocol: its errors are `{"error"}`, the id in the
    header only; the native API's are `{"detail", "correlation_id"}`."""
    return path == "/v2" or path.startswith("/v2/")
_JSON_BYTES = JSON.encode()



async def read_asgi_body(receive: Receive, declared: str | bytes | None, limit: int) -> bytes:
    """The whole body, or PayloadTooLargeError (413) as soon as it exceeds `limit`:
    a declared Content-Length (`declared`) is refused before reading, a chunked body while
    streaming. A client that disconnects mid-body raises ClientDisconnectedError."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        shown = declared.decode() if isinstance(declared, bytes) else declared
        raise PayloadTooLargeError(
            f"request body of {shown} bytes exceeds the limit of {limit} bytes "
            f"(MAX_BODY_BYTES)"
        )
    chunks = []
    size = 0
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLargeError(
                        f"request body exceeds the limit of {limit} bytes (MAX_BODY_BYTES)"
                    )
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        elif kind == "http.disconnect":
            raise ClientDisconnectedError(
                "client disconnected before sending the whole request body")
    if not chunks:
        return b""
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def correlation_header(correlation_id: str | None) -> bytes | None:
    """The X-Correlation-ID header value for `correlation_id`, or None when it does not
    follow the correlation id rule (serving_runtime.models.inference.CORRELATION_ID_RULE): only
    such ids are ever echoed in a header."""
    if correlation_id is None or not valid_correlation_id(correlation_id):
        return None
    return correlation_id.encode("ascii")


def json_response(
    content: Any, status_code: int = 200, correlation_id: str | None = None
) -> Response:
    value = correlation_header(correlation_id)
    headers = {"x-correlation-id": value.decode("latin-1")} if value else None
    return Response(orjson.dumps(content), status_code=status_code, media_type=JSON,
                    headers=headers)


async def send_json(send: Send, content: Any, status_code: int = 200,
                    correlation_id: str | None = None,
                    extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """The same response as `json_response`, as two raw ASGI messages."""
    body = orjson.dumps(content)
    headers = [(b"content-type", _JSON_BYTES), (b"content-length", b"%d" % len(body))]
    value = correlation_header(correlation_id)
    if value:
        headers.append((b"x-correlation-id", value))
    if extra_headers:
        headers += extra_headers
    await send({"type": "http.response.start", "status": status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
