"""Files: raw read/write and directory listings."""

import hashlib
import io
import os
import tarfile

import pytest

import repobox
from repobox import FileSystemItem, Sandbox

from support import BINARY


def test_read_checked_out_files(box: Sandbox) -> None:
    assert box.read_file("/workspace/README.md") == b"# simple\n\nA fixture repository.\n"
    assert box.read_file("/workspace/binary.bin") == BINARY


def test_write_read_round_trip_bytes_exact(box: Sandbox) -> None:
    data = bytes(range(256)) * 64 + os.urandom(100_000) + b"\r\n\x00"
    item = box.write_file("/workspace/out/nested/data.bin", data)
    assert isinstance(item, FileSystemItem)
    assert item.name == "data.bin"
    assert item.type == "file" and item.is_file
    assert item.size == len(data)
    assert box.read_file("/workspace/out/nested/data.bin") == data
    # The sandbox sees the same bytes.
    digest = box.exec("sha256sum /workspace/out/nested/data.bin").stdout.split()[0]
    assert digest == hashlib.sha256(data).hexdigest()


def test_write_text_and_empty(box: Sandbox) -> None:
    box.write_file("/tmp/text.txt", "héllo\nwörld\n")
    assert box.read_file("/tmp/text.txt") == "héllo\nwörld\n".encode("utf-8")
    assert box.exec("cat /tmp/text.txt").stdout == "héllo\nwörld\n"
    box.write_file("/tmp/empty", b"")
    assert box.read_file("/tmp/empty") == b""


def test_write_overwrites(box: Sandbox) -> None:
    box.write_file("/workspace/README.md", b"new")
    assert box.read_file("/workspace/README.md") == b"new"
    assert "README.md" in box.exec("git status --porcelain").stdout


def test_read_missing_file_not_found(box: Sandbox) -> None:
    with pytest.raises(repobox.NotFound) as err:
        box.read_file("/workspace/does-not-exist")
    assert err.value.detail


def test_list_dir(box: Sandbox) -> None:
    items = box.list_dir("/workspace")
    names = [item.name for item in items]
    assert names == sorted(names)
    for expected in (".git", "CHANGELOG", "README.md", "binary.bin", "src"):
        assert expected in names
    assert "." not in names and ".." not in names
    by_name = {item.name: item for item in items}
    assert by_name["src"].type == "directory" and by_name["src"].is_dir
    assert by_name["src"].size is None
    assert by_name["README.md"].size == len(b"# simple\n\nA fixture repository.\n")
    assert by_name["README.md"].permissions.startswith("-rw")
    assert by_name["README.md"].modified_at is not None
    assert [item.name for item in box.list_dir("/workspace/src")] == ["main.py"]
    # Default path: /workspace.
    assert [item.name for item in box.list_dir()] == names


def test_list_dir_symlink_and_odd_names(box: Sandbox) -> None:
    box.exec("mkdir /tmp/odd && cd /tmp/odd && touch 'with space' 'ünï' && ln -s 'with space' link")
    items = {item.name: item for item in box.list_dir("/tmp/odd")}
    assert set(items) == {"with space", "ünï", "link"}
    assert items["link"].type == "symlink" and items["link"].is_symlink
    assert items["link"].symlink_target == "with space"


def test_list_dir_errors(box: Sandbox) -> None:
    with pytest.raises(repobox.NotFound):
        box.list_dir("/workspace/nope")
    with pytest.raises(repobox.BadRequest):
        box.list_dir("/workspace/README.md")


def test_archive_round_trip(box: Sandbox) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data, mode in (("run.sh", b"#!/bin/sh\necho hi\n", 0o755), ("sub/data.bin", BINARY, 0o644)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    box.exec("mkdir -p /tmp/in")
    assert box.write_archive("/tmp/in", buffer.getvalue()) is None
    assert box.exec("/tmp/in/run.sh").stdout == "hi\n"
    assert box.read_file("/tmp/in/sub/data.bin") == BINARY

    # A directory's tar names its entries from the directory's own name.
    with tarfile.open(fileobj=io.BytesIO(box.read_archive("/tmp/in"))) as tar:
        members = {member.name: member for member in tar.getmembers()}
        assert {"in/run.sh", "in/sub/data.bin"} <= set(members)
        assert members["in/run.sh"].mode & 0o777 == 0o755
        assert tar.extractfile(members["in/sub/data.bin"]).read() == BINARY  # type: ignore[union-attr]

    with pytest.raises(repobox.NotFound):
        box.read_archive("/tmp/nope")
    with pytest.raises(repobox.APIError):
        box.write_archive("/tmp/in/run.sh", buffer.getvalue())
