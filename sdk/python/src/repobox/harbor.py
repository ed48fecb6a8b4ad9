"""A Harbor environment that runs each trial in a repobox sandbox.

Harbor (PyPI ``harbor``, the framework behind Terminal-Bench) runs agent tasks in
pluggable environments. Select this one by its import path::

    harbor run -p TASK -a oracle -e repobox.harbor:RepoboxEnvironment \\
        --ek url=http://repobox:8000

Only this module imports Harbor (Python >= 3.12); ``import repobox`` does not.

How a task maps onto repobox:

* ``environment/Dockerfile`` → ``POST /images``. repobox builds images only from a git
  repository, so :meth:`RepoboxEnvironment.start` commits the task's ``environment/``
  directory (the build context) into a temporary bare repository and serves it over
  git's smart HTTP protocol (``git http-backend``, so ``git`` must be installed) on
  ``git_bind``, from a server that lives as long as the Harbor process. The repobox
  server must reach it: ``git_host`` is the address it is told (default:
  ``git_bind``), and that host must be in the server's ``ALLOWED_GIT_HOSTS``; building
  needs ``ALLOW_IMAGE_BUILDS=true``. repobox keys an image by repository URL and tree,
  so the trials of one run that share a task share one build (and runs share it too
  when ``git_port`` is fixed). A task with a prebuilt ``docker_image`` and no
  Dockerfile runs on that image (``ALLOWED_IMAGES``).
* The sandbox → ``POST /containers`` on the built image (its ``/workspace`` holds the
  same ``environment/`` checkout). Network: Harbor's ``public`` is ``"bridge"`` (the
  server needs ``ALLOW_NETWORK=true``), ``no-network`` is ``"none"``, and
  ``allowlist`` is repobox's egress allow-list (host names and IPv4 addresses).
  ``cpus``/``memory_mb``/``storage_mb`` become ``resources``.
* ``exec`` → ``POST /execute`` (or ``/execute/stream`` when Harbor streams output), in
  the Dockerfile's ``WORKDIR`` (or the task's ``workdir``; else repobox's default,
  ``/workspace``). A ``user`` other than root runs through ``su``. A command past its
  timeout raises ``RuntimeError``, as Harbor's Docker environment does.
* Files → the raw file routes; directories → the tar routes (``/archive``).
* ``stop`` → ``DELETE /containers/{id}`` (kept with ``delete=False``). Built images stay
  on the server as a cache (``GET /images``, ``DELETE /images/{id}``).
* ``force_build`` changes nothing: repobox answers a build it has already made with
  the image it has.
"""

from __future__ import annotations

import asyncio
import atexit
import io
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any, override

from harbor.environments.base import BaseEnvironment, ExecResult, transfer_tar_filter
from harbor.environments.capabilities import (
    EnvironmentCapabilities,
    EnvironmentResourceCapabilities,
)
from harbor.environments.definition import (
    effective_exec_cwd,
    require_agent_environment_definition,
    should_use_prebuilt_docker_image,
)
from harbor.environments.options import EnvironmentOptions
from harbor.models.task.config import NetworkMode, NetworkPolicy

from .async_client import AsyncClient, AsyncSandbox
from .errors import NotFound
from .models import ExitEvent, StderrEvent, StdoutEvent

__all__ = ["RepoboxEnvironment", "RepoboxOptions"]

# Fixed so that the same environment/ directory gives the same commit (repobox keys a
# build by repository URL, tree and recipe).
_COMMIT_DATE = "2000-01-01T00:00:00Z"
_ROOT_USERS = ("root", 0, "0")


class RepoboxOptions(EnvironmentOptions):
    """``--ek`` options of :class:`RepoboxEnvironment`."""

    url: str | None = None
    """The repobox server (default: ``REPOBOX_URL``, else ``http://localhost:8000``)."""
    api_key: str | None = None
    """Its API key (default: ``REPOBOX_API_KEY``)."""
    git_bind: str = "127.0.0.1"
    """Address the environment's temporary git server listens on."""
    git_host: str | None = None
    """Address the repobox server reaches that git server at (default: ``git_bind``)."""
    git_port: int = 0
    """Its port (0: any free one)."""
    max_runtime_secs: int | None = None
    """The sandbox's lifetime on the server (None: until ``stop``)."""


class RepoboxEnvironment(BaseEnvironment):
    """A Harbor environment on a repobox server (see the module's documentation)."""

    options_model = RepoboxOptions
    options: RepoboxOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._workdir = _dockerfile_workdir(self._dockerfile)
        self._client: AsyncClient | None = None
        self._box: AsyncSandbox | None = None
        self._max_exec_secs: int | None = None

    @staticmethod
    @override
    def type() -> str:
        return "repobox"

    @classmethod
    @override
    def resource_capabilities(cls) -> EnvironmentResourceCapabilities:
        return EnvironmentResourceCapabilities(cpu_limit=True, memory_limit=True, fractional_cpus=True)

    @property
    @override
    def capabilities(self) -> EnvironmentCapabilities:
        return EnvironmentCapabilities(
            disable_internet=True,
            network_allowlist=True,
            network_allowlist_hostnames=True,
            network_allowlist_wildcard_hostnames=True,
            network_allowlist_ipv4_addresses=True,
        )

    @property
    def _dockerfile(self) -> Path:
        return self.environment_dir / "Dockerfile"

    @override
    def _validate_definition(self) -> None:
        require_agent_environment_definition(self.environment_dir, docker_image=self.task_env_config.docker_image)
        if (self.environment_dir / "docker-compose.yaml").exists():
            raise ValueError("the repobox environment runs one container: docker-compose tasks are not supported")

    # --- lifecycle ------------------------------------------------------------------

    @override
    async def start(self, force_build: bool) -> None:
        self._client = AsyncClient(self.options.url, self.options.api_key)
        info = await self._client.info()
        self._max_exec_secs = info.limits.get("max_exec_timeout_secs")
        prebuilt = should_use_prebuilt_docker_image(
            self.environment_dir, docker_image=self.task_env_config.docker_image, force_build=force_build
        )
        git = await asyncio.to_thread(_GitServer.shared, self.options.git_bind, self.options.git_port)
        repo_url = await asyncio.to_thread(
            git.publish,
            self.environment_dir,
            "{}-{}".format(self.environment_name, self.environment_id[:12]),
            self.options.git_host or self.options.git_bind,
        )
        create: dict[str, Any] = {}
        if prebuilt:
            create["image"] = self.task_env_config.docker_image
        else:
            self.logger.debug("building %s from %s", self.environment_name, repo_url)
            image = await self._client.images.build(repo_url, wait_timeout=self.task_env_config.build_timeout_sec)
            if image.status != "ready":
                raise RuntimeError(
                    "repobox could not build the image of {}: {}".format(self.environment_name, image.error)
                )
            create["image_id"] = image.image_id
        self._box = await self._client.create(
            repo_url,
            max_runtime_secs=self.options.max_runtime_secs,
            resources=self._resources() or None,
            network=self._network(self.network_policy),
            **create,
        )
        self.logger.debug("sandbox %s runs %s", self._box.container_id, self.environment_name)

        dirs = self._mount_targets(writable_only=True)
        cwd = effective_exec_cwd(None, self.task_env_config.workdir, self._workdir)
        if cwd:
            dirs.append(cwd)
        if dirs:
            result = await self.exec(self._ensure_dirs_command(dirs), cwd="/", user="root")
            if result.return_code != 0:
                raise RuntimeError("cannot create {}: {}".format(dirs, result.stderr or result.stdout))
        await self._upload_environment_dir_after_start()

    @override
    async def stop(self, delete: bool) -> None:
        try:
            if self._box is not None:
                if delete:
                    try:
                        await self._box.destroy()
                    except NotFound:
                        pass  # expired (max_runtime_secs) or removed already
                else:
                    self.logger.info("keeping repobox sandbox %s", self._box.container_id)
        finally:
            self._box = None
            if self._client is not None:
                await self._client.aclose()
                self._client = None

    def _resources(self) -> dict[str, Any]:
        resources: dict[str, Any] = {}
        if self._effective_cpus is not None:
            resources["cpus"] = float(self._effective_cpus)
        if self._effective_memory_mb is not None:
            resources["memory_mb"] = self._effective_memory_mb
        if self._effective_storage_mb is not None:
            resources["disk_mb"] = self._effective_storage_mb
        return resources

    @staticmethod
    def _network(policy: NetworkPolicy) -> Any:
        if policy.network_mode == NetworkMode.PUBLIC:
            return "bridge"
        if policy.network_mode == NetworkMode.NO_NETWORK:
            return "none"
        return {"allow": list(policy.allowed_hosts)}

    # --- commands -------------------------------------------------------------------

    @property
    def _sandbox(self) -> AsyncSandbox:
        if self._box is None:
            raise RuntimeError("the repobox environment is not started")
        return self._box

    @override
    async def exec(
        self,
        command: str,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout_sec: int | None = None,
        user: str | int | None = None,
    ) -> ExecResult:
        box = self._sandbox
        user = self._resolve_user(user)
        if user is not None and user not in _ROOT_USERS:
            name = shlex.quote(user) if isinstance(user, str) else '"$(getent passwd {} | cut -d: -f1)"'.format(user)
            command = "su {} -s /bin/bash -c {}".format(name, shlex.quote(command))
        # repobox bounds every command (MAX_EXEC_TIMEOUT_SECS); Harbor's "no timeout"
        # is the longest the server allows.
        timeout = timeout_sec or self._max_exec_secs
        if timeout and self._max_exec_secs and timeout > self._max_exec_secs:
            self.logger.warning("timeout %ss is above the server's %ss", timeout, self._max_exec_secs)
            timeout = self._max_exec_secs
        workdir = effective_exec_cwd(cwd, self.task_env_config.workdir, self._workdir)
        environment = self._merge_env(env)
        callback = self._output_callback()
        if callback is None:
            result = await box.exec(command, timeout, None, workdir, environment)
            stdout, stderr, code, timed_out = result.stdout, result.stderr, result.exit_code, result.timed_out
        else:
            out: list[str] = []
            err: list[str] = []
            code, timed_out = -1, False
            async for event in box.stream(command, timeout, None, workdir, environment):
                if isinstance(event, StdoutEvent):
                    out.append(event.data)
                    await callback(event.data, "stdout")
                elif isinstance(event, StderrEvent):
                    err.append(event.data)
                    await callback(event.data, "stderr")
                elif isinstance(event, ExitEvent):
                    code = event.exit_code if event.exit_code is not None else -1
                    timed_out = event.timed_out
            stdout, stderr = "".join(out), "".join(err)
        if timed_out:
            raise RuntimeError("Command timed out after {} seconds".format(timeout))
        return ExecResult(stdout=stdout or None, stderr=stderr or None, return_code=code)

    # --- files ----------------------------------------------------------------------

    @override
    async def upload_file(self, source_path: Path | str, target_path: str) -> None:
        data = await asyncio.to_thread(Path(source_path).read_bytes)
        await self._sandbox.write_file(target_path, data)

    @override
    async def upload_dir(self, source_dir: Path | str, target_dir: str) -> None:
        source = Path(source_dir)
        result = await self.exec("mkdir -p {}".format(shlex.quote(target_dir)), cwd="/", user="root")
        if result.return_code != 0:
            raise RuntimeError("cannot create {}: {}".format(target_dir, result.stderr or result.stdout))
        data = await asyncio.to_thread(_pack, source)
        await self._sandbox.write_archive(target_dir, data)

    @override
    async def download_file(self, source_path: str, target_path: Path | str) -> None:
        data = await self._sandbox.read_file(source_path)
        target = Path(target_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(target.write_bytes, data)

    @override
    async def download_dir(self, source_dir: str, target_dir: Path | str) -> None:
        data = await self._sandbox.read_archive(source_dir)
        await asyncio.to_thread(_unpack, data, PurePosixPath(source_dir).name, Path(target_dir))


def _dockerfile_workdir(dockerfile: Path) -> str | None:
    """The final stage's ``WORKDIR`` (relative ones resolved), or None.

    Harbor's own parser needs ``dockerfile-parse``, which only some of its extras
    install; a task's Dockerfile needs no more than this (no variables are expanded).
    """
    if not dockerfile.is_file():
        return None
    text = re.sub(r"\\\r?\n", " ", dockerfile.read_text(errors="replace"))
    workdir: str | None = None
    for line in text.splitlines():
        words = line.strip().split(None, 1)
        if not words or words[0].startswith("#"):
            continue
        instruction, value = words[0].upper(), (words[1].strip() if len(words) > 1 else "")
        if instruction == "FROM":
            workdir = None
        elif instruction == "WORKDIR" and value:
            value = value.strip("\"'")
            workdir = value if value.startswith("/") else str(PurePosixPath(workdir or "/") / value)
    return workdir


def _pack(source: Path) -> bytes:
    """A tar of what is in ``source`` (entries relative to it), owned by root."""

    def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for child in sorted(source.iterdir()):
            tar.add(child, arcname=child.name, filter=as_root)
    return buffer.getvalue()


def _unpack(data: bytes, name: str, target: Path) -> None:
    """Unpacks a tar that repobox made of a directory (its entries start with the
    directory's own name) into ``target``, overwriting what is there."""
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch, tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(scratch, filter=transfer_tar_filter)
        root = Path(scratch) / name if name else Path(scratch)
        if not root.is_dir():
            root = Path(scratch)
        shutil.copytree(root, target, symlinks=True, dirs_exist_ok=True)


# --- the temporary git server ------------------------------------------------------


class _GitHandler(BaseHTTPRequestHandler):
    """``git http-backend`` (smart HTTP) as CGI over the bare repositories in ``root``."""

    root: Path

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        path, _, query = self.path.partition("?")
        body = self._body()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "REMOTE_ADDR": self.client_address[0],
        }
        out = subprocess.run(
            ["git", "http-backend"], input=body, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        ).stdout
        head, sep, payload = out.partition(b"\r\n\r\n")
        if not sep:
            head, sep, payload = out.partition(b"\n\n")
        if not sep:
            self.send_error(502)
            return
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers.append((key, value.strip()))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _GitServer:
    """A git smart-HTTP server for the rest of the process, serving one bare repository
    per environment directory content.

    One per (address, port) and process, not one per trial: the trials of a run that
    share a task then share a repository URL, and since repobox keys a built image by
    the URL and the tree, they share one image, built once. Its thread is a daemon's;
    the repositories go with the process (``atexit``).
    """

    _servers: dict[tuple[str, int], "_GitServer"] = {}
    _lock = threading.Lock()

    @classmethod
    def shared(cls, bind: str, port: int) -> "_GitServer":
        with cls._lock:
            server = cls._servers.get((bind, port))
            if server is None:
                server = cls._servers[(bind, port)] = cls(bind, port)
            return server

    def __init__(self, bind: str, port: int) -> None:
        self._scratch = tempfile.mkdtemp(prefix="repobox-harbor-")
        atexit.register(shutil.rmtree, self._scratch, True)
        handler = type("Handler", (_GitHandler,), {"root": Path(self._scratch)})
        self._server = ThreadingHTTPServer((bind, port), handler)
        self._server.daemon_threads = True
        self._publishing = threading.Lock()
        threading.Thread(target=self._server.serve_forever, name="repobox-harbor-git", daemon=True).start()

    def publish(self, directory: Path, name: str, host: str) -> str:
        """Commits everything in ``directory`` (ignored files too: they are part of the
        build context) to the bare repository ``name`` unless it is there, and returns
        its URL. ``name`` must change with the directory's content."""
        name = re.sub(r"[^A-Za-z0-9._-]", "-", name) + ".git"
        bare = Path(self._scratch) / name
        host_part = "[{}]".format(host) if ":" in host else host
        url = "http://{}:{}/{}".format(host_part, self._server.server_address[1], name)
        with self._publishing:
            if (bare / "refs" / "heads" / "main").is_file():
                return url
            shutil.rmtree(bare, ignore_errors=True)
            base = {
                **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_CONFIG_GLOBAL": os.devnull,
                "GIT_AUTHOR_NAME": "harbor",
                "GIT_AUTHOR_EMAIL": "harbor@localhost",
                "GIT_AUTHOR_DATE": _COMMIT_DATE,
                "GIT_COMMITTER_NAME": "harbor",
                "GIT_COMMITTER_EMAIL": "harbor@localhost",
                "GIT_COMMITTER_DATE": _COMMIT_DATE,
            }
            in_repo = {**base, "GIT_DIR": str(bare), "GIT_WORK_TREE": str(directory)}
            for args, env in (
                (["init", "--quiet", "--bare", "--initial-branch=main", str(bare)], base),
                (["add", "--all", "--force", "."], in_repo),
                (["commit", "--quiet", "--allow-empty", "--no-verify", "-m", "Harbor task environment"], in_repo),
            ):
                done = subprocess.run(["git", *args], env=env, capture_output=True)
                if done.returncode != 0:
                    raise RuntimeError("git {} failed: {}".format(args[0], done.stderr.decode(errors="replace")))
        return url
