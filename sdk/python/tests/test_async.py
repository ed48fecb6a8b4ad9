"""The AsyncClient, on a representative subset (run with asyncio.run: no plugin needed)."""

import asyncio
from typing import Any, Awaitable, Callable

import pytest

import repobox
from repobox import AsyncClient, AsyncSandbox, ExitEvent, StderrEvent, StdoutEvent


def run(factory: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(factory())


def test_async_lifecycle_exec_stream_files(server, repo_url: str, fixture) -> None:
    async def body() -> None:
        async with AsyncClient(server.url) as client:
            assert (await client.health()).status == "healthy"
            assert (await client.info()).instance == server.instance
            async with client.create(repo_url, branch="feature") as box:
                assert isinstance(box, AsyncSandbox)
                assert box.status == "running"
                assert box.resolved_commit == fixture.feature_head

                result = await box.exec("cat; echo err >&2; exit 4", stdin="piped\n")
                assert (result.exit_code, result.stdout, result.stderr) == (4, "piped\n", "err\n")

                events = [ev async for ev in box.stream("echo a; echo b >&2; echo c")]
                assert isinstance(events[-1], ExitEvent) and events[-1].exit_code == 0
                assert "".join(e.data for e in events if isinstance(e, StdoutEvent)) == "a\nc\n"
                assert "".join(e.data for e in events if isinstance(e, StderrEvent)) == "b\n"

                data = bytes(range(256)) * 10
                item = await box.write_file("/workspace/x/y.bin", data)
                assert item.size == len(data)
                assert await box.read_file("/workspace/x/y.bin") == data
                assert "y.bin" in [i.name for i in await box.list_dir("/workspace/x")]

                assert box.id in [b.id for b in await client.list()]
                got = await client.get(box.id)
                assert isinstance(got, AsyncSandbox) and got.id == box.id
                await box.extend(900)
                assert box.expires_at is not None
                assert (await box.refresh()).status == "running"
                box_id = box.id
            with pytest.raises(repobox.NotFound):
                await client.get(box_id)

    run(body)


def test_async_await_create_and_destroy_on_exception(server, repo_url: str) -> None:
    async def body() -> None:
        async with AsyncClient(server.url) as client:
            box = await client.create(repo_url)
            await box.destroy()
            assert box.status == "destroyed"
            with pytest.raises(repobox.NotFound):
                await client.get(box.id)

            seen = {}
            with pytest.raises(RuntimeError):
                async with client.create(repo_url) as other:
                    seen["id"] = other.id
                    raise RuntimeError("boom")
            with pytest.raises(repobox.NotFound):
                await client.get(seen["id"])

    run(body)


def test_async_processes_snapshot_fork(server, repo_url: str) -> None:
    async def body() -> None:
        async with AsyncClient(server.url) as client:
            async with client.create(repo_url) as box:
                proc = await box.processes.start("echo up; sleep 300")
                for _ in range(50):
                    out = await box.processes.output(proc)
                    if out.stdout:
                        break
                    await asyncio.sleep(0.2)
                assert out.stdout == "up\n"
                assert proc.process_id in [p.process_id for p in await box.processes.list()]
                await box.processes.kill(proc, signal="SIGTERM")
                ended = await box.processes.wait(proc, timeout=15)
                assert ended.status == "killed"

                await box.write_file("/workspace/mark", b"m")
                snap = await box.snapshot()
                assert snap.snapshot_id in [s.snapshot_id for s in await client.snapshots.list()]
                async with client.create(snapshot_id=snap.snapshot_id) as copy:
                    assert await copy.read_file("/workspace/mark") == b"m"
                await client.snapshots.delete(snap)

                forks = await box.fork(1)
                assert len(forks) == 1 and isinstance(forks[0], AsyncSandbox)
                assert await forks[0].read_file("/workspace/mark") == b"m"
                await forks[0].destroy()
                await client.snapshots.delete(forks.snapshot_id)

    run(body)


def test_async_errors(server, repo_url: str) -> None:
    async def body() -> None:
        async with AsyncClient(server.url) as client:
            with pytest.raises(repobox.NotFound) as err:
                await client.get("repo-container-nope")
            assert "repo-container-nope" in (err.value.detail or "")
            with pytest.raises(repobox.Unprocessable):
                await client.create(repo_url, branch="missing-branch")
        async with AsyncClient("http://127.0.0.1:9", timeout=5) as dead:
            with pytest.raises(repobox.TransportError):
                await dead.health()

    run(body)


def test_async_auth(strict_server) -> None:
    async def body() -> None:
        async with AsyncClient(strict_server.url, api_key="bad") as client:
            with pytest.raises(repobox.Unauthorized):
                await client.list()

    run(body)
