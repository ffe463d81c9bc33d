"""Turning whatever the source held into a flat model folder, checking it, pinning it.

The folder format (file names, the artifact table, metadata schema, sha256) is
serving_runtime/models/folder_format.py, the same module the runtime's loader reads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from serving_runtime.errors import ModelLoadError
from serving_runtime.models.folder_format import (
    MAX_METADATA_BYTES,
    MAX_SAMPLE_BYTES,
    METADATA_FILE,
    SAMPLE_FILE,
    artifact_kind,
    artifact_suffixes,
    artifact_table,
    check_metadata,
    check_sha256,
    find_artifact_name,
    inside,
    parse_folder_json,
    read_folder_file,
    sha256_file,
)

from .errors import MetadataError, UnsafeArchiveError


def copy_flat_folder(src: Path, dst: Path, *, max_bytes: int) -> None:
    """Copy the top-level files of a model folder.

    Symlinks are followed only when they stay inside `src`: a ConfigMap volume is made
    of such links (`key -> ..data/key`), while a link to /etc/passwd is refused. Dot
    entries (ConfigMap's `..data`, editor droppings) are skipped; other subfolders are
    an error because a model folder is flat.
    """
    root = src.resolve()
    total = 0
    for entry in sorted(src.iterdir()):
        if entry.name.startswith("."):
            continue
        real = entry.resolve()
        if not inside(real, root):
            raise UnsafeArchiveError(
                f"{entry}: symlink points outside the model folder (to {real}); refused"
            )
        if real.is_dir():
            raise MetadataError(
                f"{entry}: a model folder is flat (metadata.json + one artifact); "
                "found a subfolder - did the URI name a folder of models instead of one model?"
            )
        if not real.is_file():
            raise UnsafeArchiveError(f"{entry}: not a regular file; refused")
        total += real.stat().st_size
        if total > max_bytes:
            raise UnsafeArchiveError(
                f"{src}: model folder is larger than the size cap of {max_bytes} bytes "
                "(raise --max-bytes if the model really is this large)"
            )
        shutil.copyfile(real, dst / entry.name)


def _stored_name(src: Path, framework: str) -> str:
    try:
        return artifact_kind(src.suffix, framework).stored_name
    except ValueError as exc:
        raise MetadataError(f"{src.name}: {exc}") from None


def place_bare_artifact(src: Path, folder: Path, framework: str) -> str:
    """Copy a bare artifact into `folder` under its canonical name; return that name."""
    if src.suffix.lower() not in artifact_table():
        known = ", ".join(sorted(artifact_table()))
        raise MetadataError(
            f"{src.name}: not a model folder, not a .tar.gz and not a known artifact "
            f"type (expected one of {known})"
        )
    stored = _stored_name(src, framework)
    shutil.copyfile(src, folder / stored)
    return stored


def adopt_artifact(folder: Path, framework: str) -> str:
    """A folder without metadata.json must hold exactly one artifact; give it its
    canonical name (`iris-v3.skops` -> `model.skops`) and return that name."""
    suffixes = artifact_suffixes(framework)  # a README.txt is no XGBoost artifact
    candidates = [
        p for p in sorted(folder.iterdir())
        if p.suffix.lower() in suffixes and p.name not in (METADATA_FILE, SAMPLE_FILE)
    ]
    if len(candidates) != 1:
        listed = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        raise MetadataError(
            f"no {METADATA_FILE}, so the folder must hold exactly one {framework} artifact "
            f"({', '.join(sorted(suffixes))}); found: {listed}"
        )
    src = candidates[0]
    stored = _stored_name(src, framework)
    if src.name != stored:
        src.rename(folder / stored)
    return stored


def find_artifact(folder: Path, metadata: dict[str, Any] | None, framework: str) -> Path:
    """The folder's artifact, by the same rule the runtime's loader applies, of a kind
    `framework` reads."""
    names = [p.name for p in folder.iterdir() if p.is_file()]
    try:
        found = folder / find_artifact_name(names, metadata or {"framework": framework},
                                            "the model folder")
    except ModelLoadError as exc:
        raise MetadataError(str(exc)) from None
    _stored_name(found, framework)  # a model.json named in metadata of a lightgbm folder
    return found


def read_metadata(folder: Path) -> dict[str, Any] | None:
    """metadata.json parsed as strictly as the loader parses it, or None if absent."""
    path = folder / METADATA_FILE
    if not path.is_file():
        return None
    try:  # the loader's own reading and schema: a folder fetch accepts, the runtime reads
        return check_metadata(parse_folder_json(METADATA_FILE, read_folder_file(
            folder, METADATA_FILE, limit=MAX_METADATA_BYTES,
            limit_name=f"the limit for {METADATA_FILE}")))
    except ModelLoadError as exc:
        raise MetadataError(str(exc)) from None


def check_sample(folder: Path) -> None:
    """sample.json, when present, read and parsed as the loader will (its predictions are
    checked by the runtime, which has the model)."""
    if not (folder / SAMPLE_FILE).exists():
        return
    try:
        parse_folder_json(SAMPLE_FILE, read_folder_file(
            folder, SAMPLE_FILE, limit=MAX_SAMPLE_BYTES,
            limit_name=f"the limit for {SAMPLE_FILE}"))
    except ModelLoadError as exc:
        raise MetadataError(str(exc)) from None


def check_flags_agree(metadata: dict[str, Any], framework: str, version: str) -> None:
    """An existing metadata.json must agree with the flags the operator passed."""
    for key, wanted, flag in (("framework", framework, "--framework"),
                              ("version", version, "--version")):
        have = metadata.get(key)
        if have is not None and str(have) != wanted:
            raise MetadataError(
                f"{METADATA_FILE} says {key} {str(have)!r} but {flag} is {wanted!r}; "
                "fix the MLModel spec or the model folder so they agree"
            )


def check_pins(artifact: Path, pinned: str | None, recorded: str | None) -> str:
    """Compare the artifact's digest with the pin and with metadata's; return it.
    Raises serving_runtime.errors.IntegrityError (exit code 4)."""
    actual = sha256_file(artifact)
    check_sha256(artifact.name, actual, pinned, "--sha256")
    check_sha256(artifact.name, actual, recorded, f"{METADATA_FILE} sha256")
    return actual


def write_metadata(folder: Path, metadata: dict[str, Any]) -> None:
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
