"""`python -m serving_runtime.tools.fetch`: materialise one model folder at DEST/NAME.

Used by the operator as the runtime pod's init container (same image). Everything is
assembled in a temporary folder beside DEST/NAME and renamed into place only after every
check passed, so a failed fetch never leaves a half-written or unverified model behind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from serving_runtime.errors import IntegrityError
from serving_runtime.models.folder_format import (
    DEFAULT_MAX_ARTIFACT_BYTES,
    SHA256_RE,
    bare_metadata,
    model_name_problem,
)
from serving_runtime.models.runtimes import FRAMEWORKS

from .archive import is_gzip, model_root, safe_extract
from .errors import INTEGRITY_EXIT_CODE, FetchError, UnsafeArchiveError, UsageError
from .folder import (
    adopt_artifact,
    check_flags_agree,
    check_pins,
    check_sample,
    copy_flat_folder,
    find_artifact,
    place_bare_artifact,
    read_metadata,
    write_metadata,
)
from .sources import open_source

__all__ = ["fetch", "main", "FetchError", "DEFAULT_MAX_BYTES"]

DEFAULT_MAX_BYTES = DEFAULT_MAX_ARTIFACT_BYTES  # the runtime's MAX_ARTIFACT_BYTES default
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


def _validate(name: str, framework: str, version: str, sha256: str | None) -> None:
    problem = model_name_problem(name)
    if problem is not None:
        raise UsageError(f"--name {name[:100]!r}: {problem}")
    if framework not in FRAMEWORKS:
        raise UsageError(f"--framework {framework!r}: expected one of {', '.join(FRAMEWORKS)}")
    if not version.strip():
        raise UsageError("--version must not be empty")
    if sha256 is not None and not SHA256_RE.fullmatch(sha256):
        raise UsageError(f"--sha256 {sha256!r} is not 64 hex digits")


def _check_size(src: Path, max_bytes: int) -> None:
    if src.stat().st_size > max_bytes:
        raise UnsafeArchiveError(
            f"{src.name} is larger than the size cap of {max_bytes} bytes "
            "(raise --max-bytes if the model really is this large)"
        )


def _assemble(src: Path, work: Path, folder: Path, framework: str, max_bytes: int) -> bool:
    """Fill `folder` from `src`; True when `src` was a bare artifact file."""
    if src.is_dir():
        copy_flat_folder(src, folder, max_bytes=max_bytes)
        return False
    if src.name.lower().endswith(_ARCHIVE_SUFFIXES) or is_gzip(src):
        _check_size(src, max_bytes)
        unpacked = work / "unpacked"
        unpacked.mkdir()
        safe_extract(src, unpacked, max_bytes=max_bytes)
        copy_flat_folder(model_root(unpacked), folder, max_bytes=max_bytes)
        return False
    _check_size(src, max_bytes)
    place_bare_artifact(src, folder, framework)
    return True


def _install(folder: Path, final: Path, work: Path) -> None:
    """Rename the verified folder into place, replacing an earlier fetch's result."""
    if final.exists() or final.is_symlink():
        old = work / "previous"
        os.rename(final, old)
    os.rename(folder, final)


def fetch(
    uri: str,
    dest: Path | str,
    name: str,
    *,
    framework: str,
    version: str,
    sha256: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = 60.0,
    ca_bundle: Path | str | None = None,
) -> Path:
    """Fetch `uri` into `dest/name` and return that folder. Raises FetchError subclasses,
    or serving_runtime.errors.IntegrityError for a sha256 mismatch."""
    _validate(name, framework, version, sha256)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".fetch-{name}-", dir=dest))
    try:
        folder = work / name
        folder.mkdir()
        downloads = work / "download"
        downloads.mkdir()
        src = open_source(uri, downloads, max_bytes=max_bytes, timeout=timeout,
                          ca_bundle=Path(ca_bundle) if ca_bundle else None)
        bare = _assemble(src, work, folder, framework, max_bytes)
        metadata = read_metadata(folder)
        if metadata is None and not bare:
            # A folder or archive holding just an artifact is a bare artifact too.
            adopt_artifact(folder, framework)
        if metadata is not None:
            check_flags_agree(metadata, framework, version)
        artifact = find_artifact(folder, metadata, framework)
        check_sample(folder)
        recorded = metadata.get("sha256") if metadata else None
        digest = check_pins(artifact, sha256, recorded)
        if metadata is None:
            write_metadata(folder, bare_metadata(framework, version, artifact.name, digest))
        elif sha256 and not recorded:
            # Carry the pin into the folder so the runtime re-checks it on every (re)load.
            metadata["sha256"] = digest
            write_metadata(folder, metadata)
        _install(folder, dest / name, work)
        return dest / name
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m serving_runtime.tools.fetch",
        description="Materialise a model folder at DEST/NAME from a file path, file://, "
        "http(s):// or s3:// URI (a model folder, a .tar.gz of one, or a bare artifact).",
    )
    p.add_argument("--uri", required=True, help="where the model is")
    p.add_argument("--dest", required=True, type=Path, help="models directory (DEST)")
    p.add_argument("--name", required=True, help="model name = folder name (letters, digits, "
                   "'_', '-', '.'; not starting with '.' or '-')")
    p.add_argument("--framework", required=True, choices=list(FRAMEWORKS))
    p.add_argument("--version", required=True, help="model version (must match metadata)")
    p.add_argument("--sha256", help="expected sha256 of the artifact file (not the archive)")
    p.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                   help=f"size cap for downloads and unpacked files (default {DEFAULT_MAX_BYTES})")
    p.add_argument("--timeout", type=float, default=60.0, help="HTTP timeout in seconds")
    p.add_argument("--ca-bundle", type=Path, default=os.environ.get("FETCH_CA_BUNDLE") or None,
                   help="PEM file of extra CAs to trust for https:// and s3:// besides the "
                   "public roots (default: $FETCH_CA_BUNDLE)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        folder = fetch(
            args.uri, args.dest, args.name, framework=args.framework, version=args.version,
            sha256=args.sha256, max_bytes=args.max_bytes, timeout=args.timeout,
            ca_bundle=args.ca_bundle,
        )
    except FetchError as exc:
        print(f"fetch: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except IntegrityError as exc:  # the model-folder format's one integrity error
        print(f"fetch: error: {exc}", file=sys.stderr)
        return INTEGRITY_EXIT_CODE
    except OSError as exc:  # permissions, a full disk: say so without a traceback
        print(f"fetch: error: {exc.strerror or exc}: {exc.filename or args.dest}",
              file=sys.stderr)
        return 1
    print(f"fetch: {args.uri} -> {folder}")
    return 0
