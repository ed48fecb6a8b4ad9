"""Jobs: one command across many repositories."""

import asyncio
import time

import pytest

import repobox
from repobox import Client, Job, JobDoneEvent, JobRepo, JobResult, JobResultEvent

pytestmark = [pytest.mark.jobs]


def test_run_wait_results(client: Client, repo_url: str, fixture) -> None:
    job = client.jobs.run(
        "git rev-parse HEAD && cat FEATURE && echo $JOBVAR",
        [
            repo_url,
            JobRepo(repo_url, branch="feature"),
            {"repo_url": repo_url, "branch": "no-such-branch"},
            {"repo_url": repo_url, "commit": fixture.first},
        ],
        concurrency=2,
        timeout_secs=60,
        environment_vars={"JOBVAR": "jv"},
        wait_timeout=300,
    )
    assert isinstance(job, Job)
    assert job.status == "completed"
    assert job.finished
    assert job.total == 4
    counts = job.counts
    assert counts.pending == 0 and counts.running == 0
    assert counts.succeeded + counts.failed + counts.errored + counts.cancelled == 4
    assert (counts.succeeded, counts.failed, counts.errored) == (1, 2, 1)
    assert job.finished_at is not None

    results = client.jobs.results(job)
    assert [r.index for r in results] == [0, 1, 2, 3]
    assert all(isinstance(r, JobResult) for r in results)
    trunk, feature, missing, first = results
    assert trunk.status == "failed" and trunk.exit_code != 0
    assert trunk.resolved_commit == fixture.trunk_head
    assert feature.status == "succeeded" and feature.exit_code == 0
    assert feature.stdout == "{}\nfeature\njv\n".format(fixture.feature_head)
    assert feature.branch == "feature"
    assert missing.status == "errored"
    assert missing.error is not None and "no-such-branch" in (missing.error.detail or "")
    assert first.resolved_commit == fixture.first
    assert first.status == "failed"

    assert job.job_id in [j.job_id for j in client.jobs.list()]
    assert client.jobs.get(job.job_id).status == "completed"

    events = list(client.jobs.events(job.job_id))
    assert isinstance(events[-1], JobDoneEvent)
    assert events[-1].job.job_id == job.job_id
    finished = [ev.result.index for ev in events if isinstance(ev, JobResultEvent)]
    assert sorted(finished) == [0, 1, 2, 3]

    client.jobs.delete(job)
    with pytest.raises(repobox.NotFound):
        client.jobs.get(job.job_id)


def test_run_no_wait_then_wait(client: Client, repo_url: str) -> None:
    job = client.jobs.run("echo hi", [repo_url], wait=False)
    assert job.status in ("queued", "running", "completed")
    assert job.total == 1
    done = client.jobs.wait(job, timeout=300)
    assert done.status == "completed"
    assert done.counts.succeeded == 1
    assert client.jobs.results(done)[0].stdout == "hi\n"
    client.jobs.delete(done)


def test_cancel(client: Client, repo_url: str) -> None:
    job = client.jobs.run("sleep 300", [repo_url] * 3, concurrency=1, wait=False)
    deadline = time.monotonic() + 60
    while client.jobs.get(job).counts.running == 0 and time.monotonic() < deadline:
        time.sleep(0.3)
    with pytest.raises(repobox.Conflict):
        client.jobs.delete(job)
    cancelled = client.jobs.cancel(job)
    assert cancelled.status == "cancelled"
    final = client.jobs.wait(job, timeout=120)
    assert final.status == "cancelled"
    assert final.counts.cancelled == 3
    assert all(r.status == "cancelled" for r in client.jobs.results(job))
    # Its sandboxes are gone.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not [b for b in client.list() if b.job_id == job.job_id]:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the cancelled job's sandboxes are still listed")
    client.jobs.delete(job)


def test_invalid_job_is_bad_request(client: Client, repo_url: str) -> None:
    with pytest.raises(repobox.BadRequest):
        client.jobs.run("true", [repo_url, "file:///etc/passwd"])
    with pytest.raises(repobox.BadRequest):
        client.jobs.run("true", [])


def test_unknown_job(client: Client) -> None:
    with pytest.raises(repobox.NotFound):
        client.jobs.get("job-does-not-exist")


def test_async_jobs(server, repo_url: str) -> None:
    async def body() -> None:
        async with repobox.AsyncClient(server.url) as client:
            job = await client.jobs.run("echo async-$((1+1))", [repo_url, repo_url], wait_timeout=300)
            assert job.status == "completed" and job.counts.succeeded == 2
            results = await client.jobs.results(job)
            assert [r.stdout for r in results] == ["async-2\n", "async-2\n"]
            events = [ev async for ev in client.jobs.events(job)]
            assert isinstance(events[-1], JobDoneEvent)
            assert job.job_id in [j.job_id for j in await client.jobs.list()]
            await client.jobs.delete(job)

    asyncio.run(body())
