"""Lifetime (extend), snapshots, forks and sandboxes made from a snapshot."""

from datetime import datetime, timedelta, timezone

import pytest

import repobox
from repobox import Client, ForkResult, NotFound, Sandbox, Snapshot


def test_extend(box: Sandbox) -> None:
    before = datetime.now(timezone.utc)
    assert box.extend(3600) is box
    assert box.expires_at is not None
    assert before + timedelta(seconds=3590) < box.expires_at < before + timedelta(seconds=3700)
    assert box.refresh().expires_at is not None
    box.extend(None)
    assert box.expires_at is None
    assert box.refresh().expires_at is None
    with pytest.raises(repobox.BadRequest):
        box.extend(0)


def test_extend_destroyed(client: Client, repo_url: str) -> None:
    box = client.create(repo_url)
    box.destroy()
    with pytest.raises(NotFound):
        box.extend(60)


def test_snapshot_create_from_and_delete(client: Client, box: Sandbox, fixture) -> None:
    box.write_file("/workspace/state.txt", b"made before the snapshot")
    snap = box.snapshot(name="sdk-snap")
    try:
        assert isinstance(snap, Snapshot)
        assert snap.snapshot_id and snap.id == snap.snapshot_id
        assert snap.name == "sdk-snap"
        assert snap.source_container_id == box.id
        assert snap.repo_url == box.repo_url
        assert snap.resolved_commit == fixture.trunk_head
        assert snap.image
        assert snap.created_at is not None

        assert snap.snapshot_id in [s.snapshot_id for s in client.snapshots.list()]
        assert client.snapshots.get(snap.snapshot_id).name == "sdk-snap"

        with client.create(snapshot_id=snap, environment_vars={"FROM": "snap"}) as copy:
            assert copy.id != box.id
            assert copy.repo_url == box.repo_url
            assert copy.resolved_commit == fixture.trunk_head
            assert copy.read_file("/workspace/state.txt") == b"made before the snapshot"
            assert copy.exec("echo $FROM").stdout == "snap\n"
            # A sandbox runs on it: it cannot be deleted yet.
            with pytest.raises(repobox.Conflict):
                client.snapshots.delete(snap)
    finally:
        client.snapshots.delete(snap.snapshot_id)
    with pytest.raises(NotFound):
        client.snapshots.get(snap.snapshot_id)


def test_snapshot_with_branch_is_bad_request(client: Client, box: Sandbox) -> None:
    snap = box.snapshot()
    try:
        with pytest.raises(repobox.BadRequest):
            client.create(snapshot_id=snap.snapshot_id, branch="trunk")
    finally:
        client.snapshots.delete(snap)


def test_unknown_snapshot(client: Client) -> None:
    with pytest.raises(NotFound):
        client.create(snapshot_id="snap-does-not-exist")
    with pytest.raises(NotFound):
        client.snapshots.get("snap-does-not-exist")


def test_fork(client: Client, box: Sandbox) -> None:
    box.exec("echo forked-state > /workspace/fork.txt")
    forks = box.fork(2, max_runtime_secs=600, environment_vars={"COPY": "yes"})
    try:
        assert isinstance(forks, ForkResult)
        assert len(forks) == 2
        assert forks.snapshot_id
        assert forks.errors == []
        assert len(forks.sandboxes) == 2
        ids = {copy.id for copy in forks}
        assert len(ids) == 2 and box.id not in ids
        for copy in forks:
            assert isinstance(copy, Sandbox)
            assert copy.status == "running"
            assert copy.expires_at is not None
            assert copy.exec("cat /workspace/fork.txt; echo $COPY").stdout == "forked-state\nyes\n"
        # Copies are independent of each other and of the source.
        forks[0].write_file("/workspace/fork.txt", b"changed")
        assert forks[1].read_file("/workspace/fork.txt") == b"forked-state\n"
        assert box.read_file("/workspace/fork.txt") == b"forked-state\n"
        assert box.refresh().status == "running"
    finally:
        for copy in forks.sandboxes:
            copy.destroy()
        client.snapshots.delete(forks.snapshot_id)


def test_fork_bad_count(box: Sandbox) -> None:
    with pytest.raises(repobox.BadRequest):
        box.fork(0)
