"""Hostile archives: every escape attempt is refused, nothing lands outside (or at) the
destination, and the error names the offending member."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from serving_runtime.tools.fetch import main
from serving_runtime.tools.fetch.archive import MAX_MEMBERS

ARTIFACT = b"not loaded by fetch, only hashed and moved"


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes = ARTIFACT, **attrs: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data))


def add_link(tar: tarfile.TarFile, name: str, target: str, kind: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    tar.addfile(info)


def build(path: Path, members: list[tuple]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for kind, *args in members:
            if kind == "file":
                add_bytes(tar, *args)
            else:
                add_link(tar, args[0], args[1], kind)
    return path


def fetch(archive: Path, dest: Path) -> int:
    return main(["--uri", str(archive), "--dest", str(dest), "--name", "m",
                 "--framework", "sklearn", "--version", "1"])


def assert_refused(tmp_path: Path, capsys, members: list[tuple], message: str) -> None:
    dest = tmp_path / "sandbox" / "models"
    rc = fetch(build(tmp_path / "evil.tar.gz", members), dest)
    assert rc == 5, capsys.readouterr().err
    assert message in capsys.readouterr().err
    assert not (dest / "m").exists()
    assert list(dest.iterdir()) == [], "staging must be cleaned up"
    # nothing escaped next to the destination either
    assert sorted(p.name for p in (tmp_path / "sandbox").iterdir()) == ["models"]
    assert not Path("/tmp/evil-from-fetch-test").exists()


def test_dotdot_member(tmp_path, capsys):
    assert_refused(tmp_path, capsys, [("file", "m/model.skops"), ("file", "../../escaped")],
                   "'../../escaped' tries to leave the destination")


def test_nested_dotdot_member(tmp_path, capsys):
    assert_refused(tmp_path, capsys, [("file", "m/./sub/../../../escaped")],
                   "tries to leave the destination")


def test_absolute_member(tmp_path, capsys):
    assert_refused(tmp_path, capsys, [("file", "/tmp/evil-from-fetch-test")],
                   "'/tmp/evil-from-fetch-test' has an absolute path")


def test_symlink_pointing_out(tmp_path, capsys):
    assert_refused(tmp_path, capsys, [("file", "m/model.skops"),
                                      (tarfile.SYMTYPE, "m/sample.json", "/etc/passwd")],
                   "'m/sample.json' -> '/etc/passwd' points outside the archive")


def test_relative_symlink_pointing_out(tmp_path, capsys):
    assert_refused(tmp_path, capsys, [(tarfile.SYMTYPE, "m/model.skops", "../../../etc/hosts")],
                   "points outside the archive")


def test_symlink_then_write_through_it(tmp_path, capsys):
    # The classic two-step: a link to a folder outside, then a file "inside" the link.
    assert_refused(tmp_path, capsys, [(tarfile.SYMTYPE, "m", "/tmp"),
                                      ("file", "m/evil-from-fetch-test")],
                   "points outside the archive")


def test_hardlink_pointing_out(tmp_path, capsys):
    assert_refused(tmp_path, capsys, [(tarfile.LNKTYPE, "m/model.skops", "/etc/passwd")],
                   "links are not allowed in a model archive")


def test_device_file(tmp_path, capsys):
    archive = tmp_path / "dev.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("m/model.skops")
        info.type = tarfile.CHRTYPE
        info.devmajor, info.devminor = 1, 3
        tar.addfile(info)
    dest = tmp_path / "models"
    assert fetch(archive, dest) == 5
    assert "is not a regular file or directory" in capsys.readouterr().err
    assert not (dest / "m").exists()


def test_duplicate_member(tmp_path, capsys):
    assert_refused(tmp_path, capsys, [("file", "m/model.skops"), ("file", "m/model.skops")],
                   "appears twice")


def test_too_many_members(tmp_path, capsys):
    members = [("file", f"m/f{i}", b"") for i in range(MAX_MEMBERS + 1)]
    assert_refused(tmp_path, capsys, members, f"more than {MAX_MEMBERS} members")


def test_unpacked_size_cap(tmp_path, capsys):
    # 64 KiB of zeros compresses to almost nothing: the cap applies to unpacked bytes.
    archive = build(tmp_path / "bomb.tar.gz", [("file", "m/model.skops", b"\0" * 65536)])
    assert archive.stat().st_size < 1024
    dest = tmp_path / "models"
    rc = main(["--uri", str(archive), "--dest", str(dest), "--name", "m",
               "--framework", "sklearn", "--version", "1", "--max-bytes", "4096"])
    assert rc == 5
    assert "unpacks to more than the size cap of 4096 bytes" in capsys.readouterr().err
    assert not (dest / "m").exists()


def test_corrupt_archive(tmp_path, capsys):
    archive = tmp_path / "broken.tar.gz"
    good = build(tmp_path / "good.tar.gz", [("file", "m/model.skops", b"x" * 5000)])
    archive.write_bytes(good.read_bytes()[:40])
    dest = tmp_path / "models"
    assert fetch(archive, dest) == 5
    err = capsys.readouterr().err
    assert "broken.tar.gz" in err and ("corrupt" in err or "not a readable" in err)
    assert not (dest / "m").exists()


@pytest.mark.parametrize("name", ["m/model.skops", "./model.skops", "model.skops"])
def test_benign_archive_still_works(tmp_path, name):
    dest = tmp_path / "models"
    assert fetch(build(tmp_path / "ok.tar.gz", [("file", name)]), dest) == 0
    assert (dest / "m" / "model.skops").read_bytes() == ARTIFACT


@pytest.fixture
def python_without_tar_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime image's Python (Debian bookworm 3.11.2) predates tarfile's extraction
    filters; simulate that here: fetch must extract benign archives and refuse hostile ones
    with its own checks alone (seen in a real pod: fetch crashed on tarfile.FilterError)."""
    from serving_runtime.tools.fetch import archive

    monkeypatch.setattr(archive, "_FILTER", {})
    monkeypatch.setattr(archive, "_FILTER_ERRORS", ())


def test_without_tar_filters_benign_archive_works(tmp_path, python_without_tar_filters):
    dest = tmp_path / "models"
    assert fetch(build(tmp_path / "ok.tar.gz", [("file", "m/model.skops")]), dest) == 0
    assert (dest / "m" / "model.skops").read_bytes() == ARTIFACT


@pytest.mark.parametrize("members,message", [
    ([("file", "../../escaped")], "tries to leave the destination"),
    ([("file", "m/model.skops"), (tarfile.SYMTYPE, "m/link", "/etc/passwd")],
     "points outside the archive"),
])
def test_without_tar_filters_hostile_archive_refused(tmp_path, capsys, members, message,
                                                      python_without_tar_filters):
    assert_refused(tmp_path, capsys, members, message)
