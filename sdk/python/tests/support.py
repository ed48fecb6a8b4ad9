"""Test support: a git smart-HTTP server, fixture repositories, a repobox server."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Optional

import httpx

# The git server is the repository's one (scripts/git_http_server.py, stdlib only).
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))
from git_http_server import GitHandler  # noqa: E402

# --- git over HTTP -------------------------------------------------------------------


class GitServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        handler = type("Handler", (GitHandler,), {"root": root})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.base = "http://127.0.0.1:{}".format(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, name: str, prefix: str = "t") -> str:
        return "{}/{}/{}.git".format(self.base, prefix, name)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- fixture repositories ------------------------------------------------------------


def git(cwd: Path, *args: str) -> str:
    env = dict(os.environ, GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1")
    out = subprocess.run(
        ["git", "-c", "user.name=Fixture", "-c", "user.email=fixture@example.com", "-c", "init.defaultBranch=trunk"]
        + list(args),
        cwd=str(cwd),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError("git {}: {}".format(args, out.stderr.decode()))
    return out.stdout.decode().strip()


API_KEY = "sdk-test-key"

BINARY = bytes([0, 159, 146, 150, 255, 0, 1, 13, 10])


@dataclass
class Fixture:
    """The ``simple`` repository: ``trunk`` (default, two commits) and ``feature``."""

    first: str
    trunk_head: str
    feature_head: str


def make_simple(root: Path) -> Fixture:
    work = root / "simple-work"
    work.mkdir(parents=True)
    git(work, "init", "-q")
    (work / "README.md").write_text("# simple\n\nA fixture repository.\n")
    (work / "src").mkdir()
    (work / "src" / "main.py").write_text("print('hello from simple')\n")
    (work / "binary.bin").write_bytes(BINARY)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "first")
    first = git(work, "rev-parse", "HEAD")
    (work / "CHANGELOG").write_text("second\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "second")
    trunk_head = git(work, "rev-parse", "HEAD")
    git(work, "checkout", "-q", "-b", "feature", first)
    (work / "FEATURE").write_text("feature\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "feature")
    feature_head = git(work, "rev-parse", "HEAD")
    git(work, "checkout", "-q", "trunk")
    git(root, "clone", "-q", "--bare", "simple-work", "simple.git")
    shutil.rmtree(str(work))
    return Fixture(first=first, trunk_head=trunk_head, feature_head=feature_head)


# --- the repobox server --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def default_binary() -> Path:
    repo = Path(__file__).resolve().parents[3]
    return Path(os.environ.get("REPOBOX_BIN") or repo / "target" / "debug" / "repobox")


class RepoboxServer:
    """A repobox server process on a free port, with its own data and cache."""

    def __init__(self, binary: Path, workdir: Path, extra_env: Optional[Dict[str, str]] = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = "http://127.0.0.1:{}".format(self.port)
        env = dict(os.environ)
        env.update(
            {
                "HOST": "127.0.0.1",
                "PORT": str(self.port),
                "DATA_DIR": str(workdir / "data"),
                "CACHE_DIR": str(workdir / "cache"),
                "ALLOWED_GIT_HOSTS": "127.0.0.1",
                "POOL_SIZE": "0",
                "API_KEYS": "",
                "LOG_FORMAT": "human",
            }
        )
        env.update(extra_env or {})
        self.api_key = (env.get("API_KEYS") or "").split(",")[0] or None
        self.log_path = workdir / "server.log"
        self._log = open(str(self.log_path), "wb")
        # Run in its own directory: the server also reads `.env` from where it runs.
        self.proc = subprocess.Popen(
            [str(binary)], cwd=str(workdir), env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.instance = ""

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_live(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    "repobox exited with {} at start:\n{}".format(self.proc.returncode, self.log_tail())
                )
            try:
                if httpx.get(self.url + "/api/v1/health/live", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError("repobox not live after {}s:\n{}".format(timeout, self.log_tail()))
        headers = {"Authorization": "Bearer " + self.api_key} if self.api_key else {}
        self.instance = httpx.get(self.url + "/api/v1/info", headers=headers, timeout=10).json()["instance"]

    def stop(self) -> None:
        """SIGTERM (the server removes its sandboxes), then removes whatever is left."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        if self.instance:
            remove_leftovers(self.instance)

    def leftovers(self) -> List[str]:
        return _docker_lines(["ps", "-aq", "--filter", "label=repobox.instance=" + self.instance])


def _docker_lines(args: List[str]) -> List[str]:
    try:
        out = subprocess.run(["docker"] + args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line for line in out.stdout.decode().split() if line]


def remove_leftovers(instance: str) -> None:
    containers = set(_docker_lines(["ps", "-aq", "--filter", "label=repobox.instance=" + instance]))
    containers.update(_docker_lines(["ps", "-aq", "--filter", "name=\\." + instance + "$"]))
    if containers:
        subprocess.run(["docker", "rm", "-f"] + sorted(containers), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    images = _docker_lines(["images", "-q", "--filter", "label=repobox.snapshot.instance=" + instance])
    if images:
        subprocess.run(
            ["docker", "rmi", "-f"] + sorted(set(images)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
