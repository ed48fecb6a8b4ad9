"""Images built from a repository's Dockerfile, on a server that allows builds."""

import asyncio
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import pytest

import repobox
from repobox import AsyncClient, Client, Image, ImageDoneEvent, ImageLogEvent
from support import GitServer, RepoboxServer, git


@pytest.fixture(scope="module")
def builder(binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RepoboxServer]:
    srv = RepoboxServer(binary, tmp_path_factory.mktemp("builder"), {"ALLOW_IMAGE_BUILDS": "true"})
    try:
        srv.wait_live()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def dockerfile_url(git_server: GitServer) -> str:
    name = "sdk-dockerfile-" + uuid.uuid4().hex[:8]
    root = Path(git_server.root)
    work = root / (name + "-work")
    work.mkdir(parents=True)
    git(work, "init", "-q")
    (work / "Dockerfile").write_text("FROM repobox/sandbox:bookworm\nRUN echo sdk-built > /marker\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "dockerfile")
    git(root, "clone", "-q", "--bare", work.name, name + ".git")
    shutil.rmtree(str(work))
    return git_server.url(name)


def test_build_create_on_it_and_delete(builder: RepoboxServer, dockerfile_url: str) -> None:
    with Client(builder.url) as client:
        image = client.images.build(dockerfile_url, wait_timeout=600)
        assert isinstance(image, Image)
        try:
            assert image.status == "ready", image.error
            assert image.recipe == "dockerfile" and image.dockerfile == "Dockerfile"
            assert image.size_bytes > 0 and image.finished_at is not None
            events = list(client.images.logs(image))
            assert any(isinstance(e, ImageLogEvent) and "sdk-built" in e.text for e in events)
            assert isinstance(events[-1], ImageDoneEvent) and events[-1].image.image_id == image.image_id
            assert [i.image_id for i in client.images.list()] == [image.image_id]
            # The same build again: the same image, already ready.
            assert client.images.build(dockerfile_url, wait=False).status == "ready"
            with client.create(image_id=image.image_id) as box:
                assert box.image_id == image.image_id
                assert box.exec("cat /marker").stdout == "sdk-built\n"
                with pytest.raises(repobox.Conflict):
                    client.images.delete(image)
        finally:
            client.images.delete(image)
        with pytest.raises(repobox.NotFound):
            client.images.get(image.image_id)
    out = subprocess.run(["docker", "image", "inspect", image.image], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert out.returncode != 0, "the engine's image is gone too"


def test_builds_off_is_forbidden(server: RepoboxServer, repo_url: str) -> None:
    with Client(server.url) as client:
        with pytest.raises(repobox.Forbidden):
            client.images.build(repo_url)


def test_async_images(builder: RepoboxServer) -> None:
    async def main() -> None:
        async with AsyncClient(builder.url) as client:
            assert isinstance(await client.images.list(), list)
            with pytest.raises(repobox.NotFound):
                await client.images.get("img-0000000000000000")

    asyncio.run(main())
