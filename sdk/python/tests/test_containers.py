"""Client basics and sandbox lifecycle, against the real server."""

from datetime import datetime, timedelta

import pytest

import repobox
from repobox import Client, ExecResult, NotFound, Sandbox, Unprocessable


def test_health_and_info(client: Client, server) -> None:
    health = client.health()
    assert isinstance(health, repobox.Health)
    assert health.status == "healthy"
    assert health.docker_available is True
    assert health.version

    info = client.info()
    assert isinstance(info, repobox.Info)
    assert info.name == "repobox"
    assert info.instance == server.instance
    assert "127.0.0.1" in info.allowed_git_hosts
    assert info.limits["max_containers"] >= 1
    assert "max_exec_timeout_secs" in info.limits


def test_env_fallbacks(server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPOBOX_URL", server.url + "/")
    monkeypatch.setenv("REPOBOX_API_KEY", "from-env")
    with Client() as c:
        assert c.url == server.url
        assert c.api_key == "from-env"
        assert c._http.headers["Authorization"] == "Bearer from-env"
        assert c.health().status == "healthy"
    monkeypatch.delenv("REPOBOX_URL")
    monkeypatch.delenv("REPOBOX_API_KEY")
    with Client() as c:
        assert c.url == "http://127.0.0.1:8000"
        assert c.api_key is None
        assert "Authorization" not in c._http.headers


def test_create_default_branch(client: Client, repo_url: str, fixture) -> None:
    with client.create(repo_url) as box:
        assert isinstance(box, Sandbox)
        assert box.status == "running"
        assert box.id == box.container_id
        assert box.repo_url == repo_url
        assert box.branch == "trunk"
        assert box.commit is None
        assert box.resolved_commit == fixture.trunk_head
        assert box.working_directory == "/workspace"
        assert box.image
        assert isinstance(box.created_at, datetime)
        assert box.created_at.tzinfo is not None
        assert box.expires_at is None
        assert box.initial_command_result is None
        head = box.exec("git rev-parse HEAD && git branch --show-current")
        assert head.stdout.split() == [fixture.trunk_head, "trunk"]


def test_create_shallow(client: Client, repo_url: str, fixture) -> None:
    with client.create(repo_url, depth=1) as box:
        assert box.depth == 1
        shallow = box.exec("git rev-list --count HEAD; git rev-parse --is-shallow-repository")
        assert shallow.stdout.split() == ["1", "true"]


def test_create_branch_commit_env_initial_command(client: Client, repo_url: str, fixture) -> None:
    with client.create(
        repo_url,
        branch="feature",
        commit=fixture.feature_head[:10],
        max_runtime_secs=600,
        environment_vars={"GREETING": "hello sdk"},
        initial_command="echo init-$GREETING; echo oops >&2; exit 2",
        resources={"cpus": 0.5, "memory_mb": 256},
    ) as box:
        assert box.branch == "feature"
        assert box.commit == fixture.feature_head[:10]
        assert box.resolved_commit == fixture.feature_head
        assert box.expires_at is not None
        lifetime = box.expires_at - box.created_at
        assert timedelta(seconds=590) < lifetime <= timedelta(seconds=601)
        init = box.initial_command_result
        assert isinstance(init, ExecResult)
        assert init.exit_code == 2
        assert init.stdout == "init-hello sdk\n"
        assert init.stderr == "oops\n"
        assert box.exec("cat FEATURE && echo $GREETING").stdout == "feature\nhello sdk\n"


def test_list_and_get(client: Client, repo_url: str) -> None:
    with client.create(repo_url) as one, client.create(repo_url) as two:
        assert one.id != two.id
        listed = {box.id: box for box in client.list()}
        assert {one.id, two.id} <= set(listed)
        assert all(isinstance(box, Sandbox) for box in listed.values())
        assert listed[one.id].repo_url == repo_url
        got = client.get(two.id)
        assert isinstance(got, Sandbox)
        assert got.id == two.id
        assert got.status == "running"
        assert got.resolved_commit == two.resolved_commit
        # A sandbox got by id works like the one create returned.
        assert got.exec("echo $((6*7))").stdout == "42\n"
    listed_after = {box.id for box in client.list()}
    assert one.id not in listed_after and two.id not in listed_after


def test_refresh(client: Client, box: Sandbox) -> None:
    box.status = "stale"
    assert box.refresh() is box
    assert box.status == "running"
    assert box.raw["container_id"] == box.id


def test_destroy(client: Client, repo_url: str) -> None:
    box = client.create(repo_url)
    box.destroy()
    assert box.status == "destroyed"
    with pytest.raises(NotFound) as err:
        client.get(box.id)
    assert err.value.status == 404
    with pytest.raises(NotFound):
        box.destroy()


def test_context_manager_destroys(client: Client, repo_url: str) -> None:
    with client.create(repo_url) as box:
        box_id = box.id
        assert client.get(box_id).status == "running"
    with pytest.raises(NotFound):
        client.get(box_id)


def test_context_manager_destroys_on_exception(client: Client, repo_url: str) -> None:
    holder = {}
    with pytest.raises(ZeroDivisionError):
        with client.create(repo_url) as box:
            holder["id"] = box.id
            1 / 0
    with pytest.raises(NotFound):
        client.get(holder["id"])


def test_context_manager_tolerates_destroy_inside(client: Client, repo_url: str) -> None:
    with client.create(repo_url) as box:
        box.destroy()
    assert box.status == "destroyed"


def test_unknown_branch_is_unprocessable(client: Client, repo_url: str) -> None:
    with pytest.raises(Unprocessable) as err:
        client.create(repo_url, branch="no-such-branch")
    exc = err.value
    assert exc.status == 422
    assert exc.error
    assert "no-such-branch" in (exc.detail or "")
    assert exc.timestamp


def test_unknown_commit_is_unprocessable(client: Client, repo_url: str) -> None:
    with pytest.raises(Unprocessable) as err:
        client.create(repo_url, commit="0123456789abcdef0123456789abcdef01234567")
    assert err.value.status == 422


def test_bad_request(client: Client, repo_url: str) -> None:
    with pytest.raises(repobox.BadRequest) as err:
        client.create("file:///etc")
    assert err.value.status == 400
    assert err.value.detail
    with pytest.raises(repobox.BadRequest):
        client.create(repo_url, max_runtime_secs=0)


def test_unknown_id_not_found_with_detail(client: Client) -> None:
    with pytest.raises(NotFound) as err:
        client.get("repo-container-does-not-exist")
    exc = err.value
    assert isinstance(exc, repobox.RepoboxError)
    assert exc.status == 404
    assert exc.error == "Container not found"
    assert "repo-container-does-not-exist" in (exc.detail or "")
    assert exc.body["error"] == exc.error
    with pytest.raises(NotFound):
        client.destroy("repo-container-does-not-exist")


def test_transport_error() -> None:
    with Client("http://127.0.0.1:9", timeout=5) as c:
        with pytest.raises(repobox.TransportError) as err:
            c.health()
    assert err.value.status is None
    assert isinstance(err.value, repobox.RepoboxError)
    assert err.value.__cause__ is not None

