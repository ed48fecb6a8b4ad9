"""Fixtures: one git server and one repobox server for the whole session (plus one
with an API key for the auth tests), all real."""

import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import pytest

import repobox

from support import API_KEY, Fixture, GitServer, RepoboxServer, default_binary, make_simple




def _preflight() -> Path:
    binary = default_binary()
    if not binary.is_file():
        pytest.fail(
            "repobox binary not found at {} (build it with `cargo build`, or set REPOBOX_BIN)".format(binary),
            pytrace=False,
        )
    if shutil.which("git") is None:
        pytest.fail("git is not installed", pytrace=False)
    try:
        subprocess.run(["docker", "info"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        pytest.fail("the Docker engine is not reachable (`docker info` fails)", pytrace=False)
    return binary


@pytest.fixture(scope="session")
def binary() -> Path:
    return _preflight()


@pytest.fixture(scope="session")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    root = tmp_path_factory.mktemp("repos")
    server = GitServer(root)
    server.fixture = make_simple(root)  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fixture(git_server: GitServer) -> Fixture:
    return git_server.fixture  # type: ignore[attr-defined,no-any-return]


@pytest.fixture
def repo_url(git_server: GitServer) -> str:
    """The ``simple`` repository under a URL of this test's own."""
    return git_server.url("simple", prefix="t-" + uuid.uuid4().hex[:8])


@pytest.fixture(scope="session")
def server(binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RepoboxServer]:
    # Egress to a name pinned to the loopback, where test_egress's server listens.
    egress = {"EGRESS_ALLOW": "*:*", "EGRESS_HOSTS": "pinned.test=127.0.0.1,other.test=127.0.0.1"}
    srv = RepoboxServer(binary, tmp_path_factory.mktemp("repobox"), egress)
    try:
        srv.wait_live()
        yield srv
    finally:
        srv.stop()


#: The second server's settings: API keys, a command allowlist and small limits, to
#: see 401, 403, 413 and 429 mapped.
STRICT_ENV = {
    "API_KEYS": API_KEY + ",other-key",
    "COMMAND_ALLOWLIST": "echo,cat,sleep,git,true",
    "MAX_STDIN_BYTES": "1024",
    "MAX_PROCESSES": "2",
}


@pytest.fixture(scope="session")
def strict_server(binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RepoboxServer]:
    srv = RepoboxServer(binary, tmp_path_factory.mktemp("repobox-strict"), STRICT_ENV)
    try:
        srv.wait_live()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def client(server: RepoboxServer) -> Iterator[repobox.Client]:
    with repobox.Client(server.url, timeout=120) as c:
        yield c


@pytest.fixture
def box(client: repobox.Client, repo_url: str) -> Iterator[repobox.Sandbox]:
    """A fresh sandbox of ``simple`` (default branch), destroyed after the test."""
    with client.create(repo_url, max_runtime_secs=1800) as sandbox:
        yield sandbox
