"""Fetch failures. Each kind has its own exit code so an init container's status tells
the operator (and a human reading `kubectl describe`) what went wrong without logs."""

from __future__ import annotations


class FetchError(Exception):
    """A fetch that cannot complete; `str()` is the message printed to the user."""

    exit_code = 1


class UsageError(FetchError):
    """Flags that contradict each other or are malformed."""

    exit_code = 2


class SourceError(FetchError):
    """The URI cannot be read: missing file, HTTP error, S3 error, unsupported scheme."""

    exit_code = 3


#: a sha256 that differs from the pin or from metadata.json: the model-folder format's
#: one integrity error (serving_runtime.errors.IntegrityError) exits with this code
INTEGRITY_EXIT_CODE = 4


class UnsafeArchiveError(FetchError):
    """An archive tries to escape the destination, holds links/devices, or is too large."""

    exit_code = 5


class MetadataError(FetchError):
    """metadata.json disagrees with the flags, or the folder is not a model folder."""

    exit_code = 6
