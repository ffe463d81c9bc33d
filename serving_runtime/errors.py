"""Typed errors shared by the loader, the inference code, the server and the client.

Each serving error carries the HTTP status it maps to, so the server turns it into a
response without a lookup table and the client's local mode can raise the same class
the remote mode reconstructs from a status code.
"""

from __future__ import annotations

# Client-supplied names (model, feature, input and output names) are echoed in messages
# at most this long: a 1 MB key must not come back as a 1 MB error.
ECHO_MAX_CHARS = 100


def echo(value: object, limit: int = ECHO_MAX_CHARS) -> str:
    """`value` as message text: shortened to `limit` characters (the length said), with any
    character UTF-8 cannot encode (a lone UTF-16 surrogate) written as an escape, so that
    the message can always be sent as JSON."""
    text = value if type(value) is str else repr(value)
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} characters)"
    return encodable(text)


def encodable(text: str) -> str:
    """`text` with the characters UTF-8 cannot encode (lone surrogates) escaped."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


class ServingError(Exception):
    """Base class: `status_code` is the HTTP status, `message` names the problem."""

    status_code: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequestError(ServingError):
    """The body is not parseable JSON (400)."""

    status_code = 400


class ModelNotFoundError(ServingError):
    """No loaded model by that name (404, message "Model X not found")."""

    status_code = 404

    def __init__(self, model_name: str) -> None:
        super().__init__(f"Model {echo(model_name)} not found")
        self.model_name = model_name


class VersionNotFoundError(ModelNotFoundError):
    """A pinned version (X-Model-Version, or V2's /versions/{v}) that does not answer."""

    def __init__(self, model_name: str, version: str, serving: str) -> None:
        ServingError.__init__(
            self, f"Model {echo(model_name)} has no version {echo(version)} answering "
            f"(serving: {serving})")
        self.model_name = model_name


class ModelNotReadyError(ServingError):
    """The model is expected but still loading (503: retry shortly)."""

    status_code = 503

    def __init__(self, model_name: str) -> None:
        super().__init__(f"Model {echo(model_name)} is not ready yet (loading)")
        self.model_name = model_name


class ClientDisconnectedError(ServingError):
    """The client went away before sending the whole body: counted as a client error;
    the 400 it maps to is never delivered."""

    status_code = 400


class PayloadTooLargeError(ServingError):
    """The body is larger than MAX_BODY_BYTES (413)."""

    status_code = 413


class InvalidInputError(ServingError):
    """The body parses but its content is wrong: missing/unknown/non-numeric features,
    NaN/inf, empty or ragged columns, wrong types (422)."""

    status_code = 422


class PredictionError(ServingError):
    """The model itself failed on input that passed validation (500)."""

    status_code = 500


class ModelLoadError(Exception):
    """A model folder could not be loaded (bad metadata, refused artifact, failed check)."""


class UnsafeArtifactError(ModelLoadError):
    """The artifact needs pickle (joblib/pickle, or untrusted skops types) and unsafe
    loading was not allowed."""


class IntegrityError(ModelLoadError):
    """The artifact's sha256 differs from the one recorded in metadata.json."""
