"""The model-folder format, defined once: the loader (`folder.py`), `save_model` and the
fetch init container (`tools/fetch`) all read it from here.

    <models-dir>/<model-name>/
        metadata.json   framework, version; optional artifact, sha256, task,
                        feature_names, classes (everything else is read from the artifact)
        model.<suffix>  exactly one artifact, a suffix some framework plug-in reads
                        (model.skops, model.json, model.ubj, model.txt, model.joblib, ...)
        sample.json     optional golden input + expected output, checked on every load

    <models-dir>/.challengers/<model-name>/
        the same format: the model's challenger (a canary or a shadow), when it has one

Imports no numpy and no framework: fetch runs it in an init container before anything
else, and its start time is what a pod waits for.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from serving_runtime.errors import IntegrityError, ModelLoadError
from serving_runtime.models.runtimes import FRAMEWORKS, ArtifactKind, artifact_kinds

__all__ = [
    "ARTIFACT_STEM", "CHALLENGERS_DIR", "FORMAT_VERSION", "METADATA_FILE", "SAMPLE_FILE",
    "MAX_MODEL_NAME_LENGTH", "MODEL_NAME_PATTERN", "IntegrityError", "artifact_kind",
    "artifact_table", "challenger_folder", "check_metadata", "check_sha256",
    "find_artifact_name", "is_valid_model_name",
    "model_name_problem", "parse_folder_json", "read_folder_file", "sha256_file",
    "sha256_hex", "validate_model_name",
]

METADATA_FILE = "metadata.json"
SAMPLE_FILE = "sample.json"
FORMAT_VERSION = 1
ARTIFACT_STEM = "model"
# Hidden, so model discovery never takes a challenger for a model of its own.
CHALLENGERS_DIR = ".challengers"


def challenger_folder(models_dir: Path, name: str) -> Path:
    """Where model `name`'s challenger lives (its folder is named after the model, as
    every model folder is)."""
    return models_dir / CHALLENGERS_DIR / name

# --- model names ------------------------------------------------------------------------
#
# The names trading teams use (`your_model`, `Fraud.v2`): letters of either case, digits,
# '_', '-', '.'. A name is a folder name, a URL path segment and a Prometheus label value,
# so: no path separator, no leading dot ('.', '..', hidden folders), no leading '-' (read
# as a flag by command lines), at most 128 characters. The MLModel object keeps a DNS-1123
# metadata.name; spec.model.name carries such a name to the runtime when the two differ.

MAX_MODEL_NAME_LENGTH = 128
MODEL_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
MODEL_NAME_RULE = ("letters, digits, '_', '-' and '.', not starting with '.' or '-', "
                   f"at most {MAX_MODEL_NAME_LENGTH} characters")


def is_valid_model_name(name: str) -> bool:
    return _MODEL_NAME.fullmatch(name) is not None


def model_name_problem(name: str) -> str | None:
    """Why `name` cannot be a model name (for a folder that is reported, not served), or
    None when it can."""
    if len(name) > MAX_MODEL_NAME_LENGTH:
        return (f"the name is {len(name)} characters long; model names have at most "
                f"{MAX_MODEL_NAME_LENGTH}")
    if not is_valid_model_name(name):
        return f"the name is not a model name ({MODEL_NAME_RULE})"
    return None


def validate_model_name(name: str) -> str:
    """`name`, or ValueError saying why not (model_name_problem's words)."""
    problem = model_name_problem(name)
    if problem is not None:
        shown = name if len(name) <= 100 else f"{name[:100]}... ({len(name)} characters)"
        raise ValueError(f"invalid model name {shown!r}: {problem}")
    return name


# --- the artifact table -----------------------------------------------------------------


@functools.cache
def artifact_table() -> dict[str, tuple[ArtifactKind, tuple[str, ...]]]:
    """suffix -> (kind, frameworks that read it), from the framework plug-ins."""
    return artifact_kinds()


def artifact_suffixes(framework: Any = None) -> tuple[str, ...]:
    """The suffixes `framework` reads (every framework's when None or unknown): a folder's
    `README.txt` is no artifact of an XGBoost model."""
    fw = FRAMEWORKS.get(str(framework)) if framework is not None else None
    if fw is not None:
        return tuple(k.suffix for k in fw.artifacts)
    return tuple(artifact_table())


def artifact_kind(suffix: str, framework: str | None = None) -> ArtifactKind:
    """The kind of a `suffix` artifact (as `framework` reads it, when given); ValueError
    names the suffixes known (to that framework)."""
    table = artifact_table()
    found = table.get(suffix.lower())
    if found is None:
        raise ValueError(f"not a known artifact type (expected one of "
                         f"{', '.join(sorted(table))})")
    kind, readers = found
    if framework is not None and framework not in readers:
        fw = FRAMEWORKS.get(framework)
        accepted = fw.describe_suffixes() if fw else "nothing"
        raise ValueError(f"a {suffix} artifact is read by {' or '.join(readers)}, but the "
                         f"framework is {framework} (which reads {accepted})")
    return kind


def find_artifact_name(names: Iterable[str], metadata: Mapping[str, Any] | None,
                       folder: str) -> str:
    """The folder's artifact among its file `names`: metadata's `artifact` when it names
    one, else the one `model.<known suffix>`. ModelLoadError says what was found."""
    present = set(names)
    named = metadata.get("artifact") if metadata is not None else None
    if named is not None:
        if (not isinstance(named, str) or "/" in named or "\\" in named or "\x00" in named
                or named in ("", ".", "..")):
            raise ModelLoadError(f"{METADATA_FILE} 'artifact' must be a file name in the "
                                 f"folder: {named!r}")
        if named not in present:
            raise ModelLoadError(f"artifact {named} named in {METADATA_FILE} is missing")
        return named
    suffixes = artifact_suffixes(metadata.get("framework") if metadata is not None else None)
    found = sorted(n for n in present
                   if Path(n).stem == ARTIFACT_STEM and Path(n).suffix.lower() in suffixes)
    if len(found) != 1:
        wanted = ", ".join(f"{ARTIFACT_STEM}{s}" for s in sorted(suffixes))
        raise ModelLoadError(f"expected exactly one artifact ({wanted}) in {folder}, found "
                             f"{', '.join(found) or 'none'}")
    return found[0]


# --- metadata.json ----------------------------------------------------------------------

#: optional keys and the JSON type each must have when present
_OPTIONAL_KEYS: tuple[tuple[str, type | tuple[type, ...], str], ...] = (
    ("artifact", str, "a file name"), ("task", str, "a string"),
    ("sha256", str, "a hex string"), ("feature_names", list, "a list of names"),
    ("classes", list, "a list of labels"), ("allow_unsafe", bool, "true or false"),
    ("name", str, "a string"),
)
#: a sha256 as metadata.json and a --sha256 pin write it
SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")


def check_metadata(meta: Any) -> dict[str, Any]:
    """`meta` (parsed metadata.json) if it follows the schema, else ModelLoadError naming
    the key. `framework` must be one a plug-in declares."""
    if not isinstance(meta, dict):
        raise ModelLoadError(f"{METADATA_FILE} must hold a JSON object")
    for key in ("framework", "version"):
        value = meta.get(key)
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ModelLoadError(f"{METADATA_FILE}: '{key}' is required (a string)")
    if str(meta["framework"]) not in FRAMEWORKS:
        raise ModelLoadError(f"{METADATA_FILE}: unknown framework {meta['framework']!r}; "
                             f"supported: {', '.join(FRAMEWORKS)}")
    for key, kind, label in _OPTIONAL_KEYS:
        if meta.get(key) is not None and not isinstance(meta[key], kind):
            raise ModelLoadError(f"{METADATA_FILE}: '{key}' must be {label}, not "
                                 f"{type(meta[key]).__name__}")
    if meta.get("sha256") is not None and not SHA256_RE.fullmatch(meta["sha256"]):
        raise ModelLoadError(f"{METADATA_FILE}: 'sha256' must be 64 hex digits")
    if meta.get("classes") is not None:
        _check_classes(meta["classes"])
    return meta


def _check_classes(classes: list[Any]) -> None:
    # labels come back in answers and as `class_<label>` keys: one JSON type, each once
    kinds = {type(c) for c in classes}
    if not classes or not kinds <= {str, int, float, bool} or len(kinds) != 1:
        raise ModelLoadError(f"{METADATA_FILE}: 'classes' must be a non-empty list of strings, "
                             f"numbers or booleans, all of one type")
    if len({str(c) for c in classes}) != len(classes):
        raise ModelLoadError(f"{METADATA_FILE}: 'classes' lists a label twice")


def bare_metadata(framework: str, version: str, artifact: str, digest: str) -> dict[str, Any]:
    """What fetch writes beside a bare artifact: the loader reads the rest from it."""
    return {"format_version": FORMAT_VERSION, "framework": framework, "version": version,
            "artifact": artifact, "sha256": digest}


# --- sha256 -----------------------------------------------------------------------------


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(artifact: str, actual: str, expected: str | None, origin: str) -> None:
    """IntegrityError when `expected` (from `origin`: metadata.json, a --sha256 pin) is
    given and differs from the artifact's `actual` digest."""
    if expected and expected.lower() != actual:
        raise IntegrityError(f"sha256 mismatch for {artifact}: {origin} says "
                             f"{expected.lower()}, the file's is {actual}; refused")


# --- reading a folder's files -----------------------------------------------------------
#
# Every file the loader reads goes through `read_folder_file`: it must resolve inside the
# model folder (a symlink may point into the folder - a ConfigMap/Secret volume is made of
# `key -> ..data/key` links, `..data -> ..<timestamp>/` - but not out of it), be a regular
# file (not a FIFO that blocks the loader forever, not a device) and be within its size
# limit, all checked on the open file before one byte is read.

#: default of the runtime's MAX_ARTIFACT_BYTES and of fetch's --max-bytes
DEFAULT_MAX_ARTIFACT_BYTES = 2 * 1024**3
MAX_METADATA_BYTES = 16 * 1024**2
MAX_SAMPLE_BYTES = 64 * 1024**2
_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def read_folder_file(folder: Path, name: str, *, limit: int, limit_name: str) -> bytes:
    """The bytes of `folder/name`, refused (ModelLoadError naming the file) when it resolves
    outside `folder`, is not a regular file, or is larger than `limit` (`limit_name` is the
    setting or constant the message names) - checked with fstat before reading."""
    path = folder / name
    root = folder.resolve()
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        if path.is_symlink():
            raise ModelLoadError(f"{name} is a symlink to {os.readlink(path)!r}, which does "
                                 f"not exist") from None
        raise ModelLoadError(f"{name} is missing in {folder}") from None
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte
        raise ModelLoadError(f"{name} cannot be resolved: {exc}") from None
    if not inside(real, root):
        raise ModelLoadError(
            f"{name} is a symlink to {real}, outside the model folder; refused (links must "
            f"stay inside the folder, as a ConfigMap volume's `{name} -> ..data/{name}` does)")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
    try:
        fd = os.open(real, flags)  # O_NONBLOCK: opening a FIFO must not wait for a writer
    except OSError as exc:
        raise ModelLoadError(f"{name} cannot be opened: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = next((k for test, k in _FILE_KINDS if test(st.st_mode)), "not a file")
            raise ModelLoadError(f"{name} is {kind}, not a regular file; refused")
        if st.st_size > limit:
            raise ModelLoadError(f"{name} is {st.st_size} bytes, over {limit_name} ({limit}); "
                                 f"refused before reading it")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as fh:
        # read(n) allocates n bytes up front: ask for the size seen (+1 to notice growth),
        # not the limit, which may exceed what the process may allocate.
        data = fh.read(min(limit, st.st_size) + 1)
    if len(data) > st.st_size:  # it grew after the check
        raise ModelLoadError(f"{name} grew while being read; refused (try the load again)")
    return data


def _reject_constant(literal: str) -> Any:
    raise ValueError(f"{literal} is not a JSON value")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise ValueError(f"duplicate key {k!r}")
            seen.add(k)
    return out


def parse_folder_json(name: str, data: bytes) -> Any:
    """Strict JSON of a model folder's own files: UTF-8, no NaN/Infinity, no duplicate
    keys (two readers could disagree on which one counts), nesting within Python's
    recursion limit. ModelLoadError names the file."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"{name} is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        return json.loads(text, parse_constant=_reject_constant,
                          object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise ModelLoadError(f"{name} is nested too deeply") from None
    except ValueError as exc:
        raise ModelLoadError(f"{name} is not valid JSON: {exc}") from None


def read_metadata(folder: Path) -> dict[str, Any]:
    """metadata.json of `folder`, read safely and checked against the schema."""
    return check_metadata(parse_folder_json(METADATA_FILE, read_folder_file(
        folder, METADATA_FILE, limit=MAX_METADATA_BYTES,
        limit_name=f"the limit for {METADATA_FILE}")))
