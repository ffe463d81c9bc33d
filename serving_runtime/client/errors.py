"""Typed errors of the inference client.

The classes the runtime itself raises (`serving_runtime.errors`) are re-used, so
`except InvalidInputError` catches the same thing in local mode (raised by the shared
inference code) and in remote mode (rebuilt from the server's status and message). The
client adds the failures only a network call has: unavailable, timed out, server error.
"""

from __future__ import annotations

import re
from typing import Any

from serving_runtime import errors as runtime_errors
from serving_runtime.errors import (
    BadRequestError,
    InvalidInputError,
    ModelNotFoundError,
    PayloadTooLargeError,
    PredictionError,
    ServingError,
)

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "InferenceError",
    "InferenceTimeoutError",
    "InvalidInputError",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "PayloadTooLargeError",
    "PredictionError",
    "ServerError",
    "ServiceUnavailableError",
    "TLSVerificationError",
    "error_for_status",
    "message_from_body",
]

#: Base class of every error the client raises (an alias: the runtime's base class).
#: Each raised error has `message`, `status_code` and `correlation_id`.
InferenceError = ServingError


class _ClientError(ServingError):
    """Errors only the client raises; they carry the request's correlation id."""

    def __init__(self, message: str, *, correlation_id: str | None = None) -> None:
        super().__init__(message)
        self.correlation_id = correlation_id


class ServiceUnavailableError(_ClientError):
    """The runtime cannot answer now (503, or no connection) and retries ran out; in
    local mode, the model folder exists but does not load."""

    status_code = 503


class AuthenticationError(_ClientError):
    """401 (gRPC: UNAUTHENTICATED): the runtime wants a bearer token and this client sent
    none, or one it does not accept. Never retried: the same token would fail again."""

    status_code = 401


class TLSVerificationError(ServiceUnavailableError):
    """The runtime's certificate did not verify (expired, another CA, another name): a
    setup problem, so not retried. A ServiceUnavailableError, so code that falls back when
    the server cannot be reached still does."""


class ModelNotReadyError(ServiceUnavailableError, runtime_errors.ModelNotReadyError):
    """503 "Model X is not ready yet (loading)": the runtime's own class and a
    ServiceUnavailableError, so either `except` catches it (after retries ran out)."""


class InferenceTimeoutError(_ClientError):
    """No answer within REMOTE_INFERENCE_TIMEOUT seconds."""

    status_code = 504


class ServerError(_ClientError):
    """The runtime answered with a 5xx other than 500/503 (a proxy in between, usually)."""

    status_code = 502


_MODEL_IN_MESSAGE = re.compile(r"Model (\S+) (?:not found|is not ready)")
_NOT_READY = re.compile(r"Model \S+ is not ready")


def _build(cls: type[ServingError], message: str) -> ServingError:
    # ModelNotFoundError's constructor takes a model name, not a message: bypass it so
    # the server's exact message (e.g. "requests[2]: Model x not found") is kept.
    exc = cls.__new__(cls)
    ServingError.__init__(exc, message)
    if cls in (ModelNotFoundError, ModelNotReadyError):
        found = _MODEL_IN_MESSAGE.search(message)
        exc.model_name = found.group(1) if found else None  # type: ignore[attr-defined]
    return exc


def error_for_status(
    status: int, message: str, *, correlation_id: str | None = None
) -> ServingError:
    """The typed exception for an HTTP error status and the server's message."""
    cls: type[ServingError]
    if status == 400:
        cls = BadRequestError
    elif status == 404:
        cls = ModelNotFoundError
    elif status == 413:
        cls = PayloadTooLargeError
    elif status == 503:
        cls = ModelNotReadyError if _NOT_READY.search(message) else ServiceUnavailableError
    elif status == 504:
        cls = InferenceTimeoutError
    elif 400 <= status < 500:
        cls = InvalidInputError
    elif status == 500:
        cls = PredictionError
    else:
        cls = ServerError
    exc = _build(cls, message)
    exc.status_code = status
    exc.correlation_id = correlation_id  # type: ignore[attr-defined]
    return exc


def message_from_body(body: Any, fallback: str) -> str:
    """The human message of an error body: `{"detail": ...}` (native routes, FastAPI),
    `{"error": ...}` (V2 routes), or plain text."""
    if isinstance(body, dict):
        for key in ("detail", "error", "message"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, list) and value:  # FastAPI's own validation errors
                parts = []
                for item in value:
                    if isinstance(item, dict):
                        loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                        msg = item.get("msg", "")
                        parts.append(f"{loc}: {msg}" if loc else str(msg))
                    else:
                        parts.append(str(item))
                return "; ".join(parts)
    if isinstance(body, str) and body.strip():
        return body.strip()
    return fallback
