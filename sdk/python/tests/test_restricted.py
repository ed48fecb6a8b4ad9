"""A second server with API keys, a command allowlist and small limits (see
``STRICT_ENV`` in conftest): 401, 403, 413 and 429 as typed errors."""

from typing import Iterator

import pytest

import repobox
from repobox import Client

from support import API_KEY


def test_missing_key_is_unauthorized(strict_server) -> None:
    with Client(strict_server.url, api_key="") as c:
        with pytest.raises(repobox.Unauthorized) as err:
            c.list()
    assert err.value.status == 401
    assert err.value.error


def test_wrong_key_is_unauthorized(strict_server, repo_url: str) -> None:
    with Client(strict_server.url, api_key="wrong-key") as c:
        with pytest.raises(repobox.Unauthorized) as err:
            c.create(repo_url)
        assert err.value.status == 401
        with pytest.raises(repobox.Unauthorized):
            c.info()


def test_right_key_works(strict_server, repo_url: str) -> None:
    with Client(strict_server.url, api_key=API_KEY) as c:
        assert c.info().auth_required is True
        with c.create(repo_url) as box:
            assert box.exec("echo authed").stdout == "authed\n"
            assert box.id in [b.id for b in c.list()]


def test_key_from_environment(strict_server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPOBOX_API_KEY", "other-key")
    with Client(strict_server.url) as c:
        assert c.health().status == "healthy"


@pytest.fixture
def strict_box(strict_server, repo_url: str) -> Iterator[repobox.Sandbox]:
    with Client(strict_server.url, api_key=API_KEY) as c:
        with c.create(repo_url) as box:
            yield box


def test_command_not_allowed_is_forbidden(strict_box: repobox.Sandbox) -> None:
    assert strict_box.exec("echo allowed | cat").stdout == "allowed\n"
    with pytest.raises(repobox.Forbidden) as err:
        strict_box.exec("rm -rf /workspace")
    assert err.value.status == 403
    assert "rm" in (err.value.detail or "")
    with pytest.raises(repobox.Forbidden):
        list(strict_box.stream("python3 -c 'print(1)'"))
    with pytest.raises(repobox.Forbidden):
        strict_box.processes.start("ls")


def test_stdin_too_large(strict_box: repobox.Sandbox) -> None:
    assert strict_box.exec("cat", stdin="x" * 1000).stdout == "x" * 1000
    with pytest.raises(repobox.PayloadTooLarge) as err:
        strict_box.exec("cat", stdin="x" * 5000)
    assert err.value.status == 413
    assert err.value.detail


def test_too_many_processes(strict_box: repobox.Sandbox) -> None:
    strict_box.processes.start("sleep 300")
    strict_box.processes.start("sleep 300")
    with pytest.raises(repobox.TooManyRequests) as err:
        strict_box.processes.start("sleep 300")
    assert err.value.status == 429


def test_call_after_early_error_answer(strict_server) -> None:
    """The server may close a keep-alive connection after an error it answered before
    the request's body arrived, without ``Connection: close``; the call that follows on
    that connection gets no answer. The client sends it again, once (without that, a few
    of these rounds fail)."""
    with Client(strict_server.url, api_key="wrong-key") as c:
        for _ in range(200):
            with pytest.raises(repobox.Unauthorized):
                c.create("http://127.0.0.1/x.git", environment_vars={"NAME": "v" * 50})
            with pytest.raises(repobox.Unauthorized):
                c.info()
