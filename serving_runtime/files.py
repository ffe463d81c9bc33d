"""When a mounted file changed: one `stat` (following symlinks) per look.

Shared by the runtime's token directory (server/auth.py) and TLS pair (server/tls.py) and
the client's token file (client/remote.py): each re-reads a file only when its stamp
differs from the one it read. A Kubernetes Secret rotates by swapping the `..data`
symlink to a new directory, which shows as a new inode; a file rewritten in place shows
as a new size or mtime; a chmod as a new mode.
"""

from __future__ import annotations

import os

#: (device, inode, size, mtime in ns, mode) of the file a path leads to
Stamp = tuple[int, int, int, int, int]


def stamp_of(st: os.stat_result) -> Stamp:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)


def file_stamp(path: str | os.PathLike[str]) -> Stamp:
    """The stamp of what `path` leads to (symlinks followed); OSError when it is gone."""
    return stamp_of(os.stat(path))


__all__ = ["Stamp", "file_stamp", "stamp_of"]
