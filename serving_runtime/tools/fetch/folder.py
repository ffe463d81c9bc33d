"""Turning whatever the source held into a flat model folder, checking it, pinning it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from .errors import IntegrityError, MetadataError, UnsafeArchiveError

METADATA = "metadata.json"
# bare artifact extension -> (stored file name, frameworks that write it)
ARTIFACT_KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    ".skops": ("model.skops", ("sklearn",)),
    ".ubj": ("model.ubj", ("xgboost",)),
    ".json": ("model.json", ("xgboost",)),
    ".joblib": ("model.joblib", ("sklearn", "xgboost")),
    ".pkl": ("model.joblib", ("sklearn", "xgboost")),
    ".pickle": ("model.joblib", ("sklearn", "xgboost")),
}
ARTIFACT_NAMES = tuple(sorted({stored for stored, _ in ARTIFACT_KINDS.values()}))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
        if real != root and root not in real.parents:
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


def place_bare_artifact(src: Path, folder: Path, framework: str) -> str:
    """Copy a bare artifact into `folder` under its canonical name; return that name."""
    suffix = src.suffix.lower()
    if suffix not in ARTIFACT_KINDS:
        known = ", ".join(sorted(ARTIFACT_KINDS))
        raise MetadataError(
            f"{src.name}: not a model folder, not a .tar.gz and not a known artifact "
            f"type (expected one of {known})"
        )
    stored, frameworks = ARTIFACT_KINDS[suffix]
    if framework not in frameworks:
        raise MetadataError(
            f"{src.name}: a {suffix} artifact is written by {' or '.join(frameworks)}, "
            f"but --framework is {framework}"
        )
    shutil.copyfile(src, folder / stored)
    return stored


def adopt_artifact(folder: Path, framework: str) -> str:
    """A folder without metadata.json must hold exactly one artifact; give it its
    canonical name (`iris-v3.skops` -> `model.skops`) and return that name."""
    candidates = [
        p for p in sorted(folder.iterdir())
        if p.suffix.lower() in ARTIFACT_KINDS and p.name not in (METADATA, "sample.json")
    ]
    if len(candidates) != 1:
        listed = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        raise MetadataError(
            "no metadata.json, so the folder must hold exactly one artifact "
            f"({', '.join(sorted(ARTIFACT_KINDS))}); found: {listed}"
        )
    src = candidates[0]
    stored, frameworks = ARTIFACT_KINDS[src.suffix.lower()]
    if framework not in frameworks:
        raise MetadataError(
            f"{src.name}: a {src.suffix} artifact is written by {' or '.join(frameworks)}, "
            f"but --framework is {framework}"
        )
    if src.name != stored:
        src.rename(folder / stored)
    return stored


def find_artifact(folder: Path, metadata: dict[str, Any] | None) -> Path:
    if metadata is not None and isinstance(metadata.get("artifact"), str):
        path = folder / metadata["artifact"]
        if Path(metadata["artifact"]).name != metadata["artifact"] or not path.is_file():
            raise MetadataError(
                f"metadata.json names artifact {metadata['artifact']!r}, "
                "which is not a file in the model folder"
            )
        return path
    found = [folder / n for n in ARTIFACT_NAMES if (folder / n).is_file()]
    if len(found) != 1:
        listed = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        raise MetadataError(
            f"expected exactly one artifact ({' | '.join(ARTIFACT_NAMES)}) in the model "
            f"folder, found: {listed}"
        )
    return found[0]


def read_metadata(folder: Path) -> dict[str, Any] | None:
    path = folder / METADATA
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise MetadataError(f"metadata.json is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MetadataError("metadata.json must hold a JSON object")
    return data


def check_metadata(metadata: dict[str, Any], framework: str, version: str) -> None:
    """An existing metadata.json must agree with the flags the operator passed."""
    for key, wanted, flag in (("framework", framework, "--framework"),
                              ("version", version, "--version")):
        have = metadata.get(key)
        if have is not None and str(have) != wanted:
            raise MetadataError(
                f"metadata.json says {key} {str(have)!r} but {flag} is {wanted!r}; "
                "fix the MLModel spec or the model folder so they agree"
            )


def check_sha256(artifact: Path, pinned: str | None, recorded: str | None) -> str:
    """Compare the artifact's digest with the pin and with metadata's; return it."""
    actual = sha256_of(artifact)
    for expected, origin in ((pinned, "--sha256"), (recorded, "metadata.json sha256")):
        if expected and expected.lower() != actual:
            raise IntegrityError(
                f"sha256 mismatch for {artifact.name}: {origin} is {expected.lower()}, "
                f"the file's is {actual}; refusing the model"
            )
    return actual


def write_metadata(folder: Path, metadata: dict[str, Any]) -> None:
    (folder / METADATA).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
