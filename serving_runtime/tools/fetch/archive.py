"""Safe extraction of a `.tar.gz` model folder.

Every member is checked before anything is written: no absolute paths, no `..`, no links
or device files, no duplicate names, a cap on the member count and on the total unpacked
size (headers declare sizes, and tarfile refuses to read past them, so a lying header
cannot blow the cap). Extraction then runs with tarfile's own `data` filter as a second
line of defence.
"""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath
from typing import Literal, TypedDict

from .errors import UnsafeArchiveError

GZIP_MAGIC = b"\x1f\x8b"
MAX_MEMBERS = 1000


def is_gzip(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def _check_name(name: str) -> None:
    if not name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"archive member {name!r} has an absolute path; refused")
    if ".." in PurePosixPath(name).parts or "\\" in name:
        raise UnsafeArchiveError(
            f"archive member {name!r} tries to leave the destination ('..'); refused"
        )


def _check_member(member: tarfile.TarInfo) -> None:
    _check_name(member.name)
    if member.issym() or member.islnk():
        target = member.linkname
        base = PurePosixPath(member.name).parent
        escapes = target.startswith("/") or ".." in (base / target).parts
        where = "points outside the archive" if escapes else "is a link"
        raise UnsafeArchiveError(
            f"archive member {member.name!r} -> {target!r} {where}; "
            "links are not allowed in a model archive"
        )
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(
            f"archive member {member.name!r} is not a regular file or directory; refused"
        )


# tarfile's extraction filters arrived in Python 3.11.4; the runtime image's Debian bookworm
# python3 is 3.11.2. Without them, _check_member (paths, links, member types) is the guard.
_FILTER_ERRORS: tuple[type[Exception], ...] = (
    (tarfile.FilterError,) if hasattr(tarfile, "FilterError") else ()
)


class _ExtractOptions(TypedDict, total=False):
    filter: Literal["data"]


# {} where tarfile has no filters (tests simulate that Python by setting it to {})
_FILTER: _ExtractOptions = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def safe_extract(archive: Path, dest: Path, *, max_bytes: int) -> None:
    """Unpack `archive` (gzip-compressed tar) into the existing, empty folder `dest`."""
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            members: list[tarfile.TarInfo] = []
            seen: set[str] = set()
            total = 0
            for member in tar:
                if len(members) >= MAX_MEMBERS:
                    raise UnsafeArchiveError(
                        f"archive has more than {MAX_MEMBERS} members; a model folder needs a few"
                    )
                _check_member(member)
                norm = str(PurePosixPath(member.name))
                if norm in seen and not member.isdir():
                    raise UnsafeArchiveError(f"archive member {member.name!r} appears twice")
                seen.add(norm)
                total += member.size
                if total > max_bytes:
                    raise UnsafeArchiveError(
                        f"archive unpacks to more than the size cap of {max_bytes} bytes "
                        "(raise --max-bytes if the model really is this large)"
                    )
                members.append(member)
            tar.extractall(dest, members=members, **_FILTER)
    except _FILTER_ERRORS as exc:
        raise UnsafeArchiveError(f"{archive.name}: unsafe member refused ({exc})") from exc
    except tarfile.TarError as exc:
        raise UnsafeArchiveError(f"{archive.name}: not a readable .tar.gz ({exc})") from exc
    except (EOFError, OSError) as exc:
        raise UnsafeArchiveError(f"{archive.name}: corrupt or truncated archive ({exc})") from exc


def model_root(extracted: Path) -> Path:
    """The folder inside an unpacked archive that holds the model files.

    Accepts both layouts people produce: files at the top (`tar -C model .`) or one
    top-level folder (`tar -C models iris`).
    """
    entries = [p for p in extracted.iterdir() if not p.name.startswith(".")]
    if any(p.is_file() for p in entries):
        return extracted
    dirs = [p for p in entries if p.is_dir()]
    if len(dirs) == 1:
        return dirs[0]
    if not dirs:
        raise UnsafeArchiveError("archive is empty: expected a model folder")
    names = ", ".join(sorted(p.name for p in dirs))
    raise UnsafeArchiveError(
        f"archive holds several folders ({names}); expected the files of one model folder"
    )
