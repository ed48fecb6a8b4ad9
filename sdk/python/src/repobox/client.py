"""The synchronous client (on :class:`httpx.Client`)."""

import time
from types import TracebackType
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Type, Union

import httpx

from . import _core as core
from ._core import ForkResult, Op, T
from .errors import NotFound, RepoboxError, TransportError
from .models import (
    ContainerInfo,
    ExecResult,
    FileSystemItem,
    Health,
    Image,
    ImageDoneEvent,
    Info,
    Job,
    JobDoneEvent,
    JobResult,
    Egress,
    EgressDecision,
    Port,
    Process,
    ProcessOutput,
    Snapshot,
)

__all__ = ["Client", "Sandbox", "Processes", "Snapshots", "Jobs", "Images"]


class Client:
    """A repobox server.

    ``url`` defaults to ``$REPOBOX_URL`` or ``http://127.0.0.1:8000``; ``api_key`` to
    ``$REPOBOX_API_KEY`` (sent as ``Authorization: Bearer``). ``timeout`` (seconds)
    bounds each call; calls that wait on a command or a clone get more read time.
    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        timeout: Optional[float] = core.DEFAULT_TIMEOUT,
        *,
        http_client: Optional[httpx.Client] = None,
    ) -> None:
        self.url, self.api_key = core.resolve_settings(url, api_key)
        self.timeout = timeout
        self._http = http_client or httpx.Client(
            base_url=self.url, headers=core.client_headers(self.api_key), timeout=timeout
        )
        self.snapshots = Snapshots(self)
        self.jobs = Jobs(self)
        self.images = Images(self)

    # plumbing

    def _send(self, op: "Op[Any]", stream: bool = False) -> httpx.Response:
        request = self._http.build_request(op.method, op.path, **op.request_kwargs(self.timeout))
        try:
            try:
                return self._http.send(request, stream=stream)
            except httpx.HTTPError as exc:
                if not core.retryable(exc):
                    raise
                return self._http.send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise core.wrap_transport(exc, op.method, op.path) from exc

    def _call(self, op: "Op[T]") -> T:
        response = self._send(op)
        core.raise_for_status(response)
        return op.parse(response, self)

    def _events(self, op: "Op[Any]") -> Iterator[Any]:
        """The SSE events of a streaming op; closing the iterator closes the connection."""
        response = self._send(op, stream=True)
        try:
            if response.status_code >= 400:
                response.read()
                core.raise_for_status(response)
            decoder = core.SSEDecoder()
            for line in response.iter_lines():
                event = decoder.feed(line)
                if event is not None:
                    yield op.event(*event)  # type: ignore[misc]
            event = decoder.finish()
            if event is not None:
                yield op.event(*event)  # type: ignore[misc]
        except httpx.HTTPError as exc:
            raise core.wrap_transport(exc, op.method, op.path) from exc
        finally:
            response.close()

    def _sandbox(self, data: Dict[str, Any]) -> "Sandbox":
        return Sandbox._bind(self, ContainerInfo.from_dict(data))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # the API

    def health(self) -> Health:
        return self._call(core.health())

    def info(self) -> Info:
        return self._call(core.info())

    def create(
        self,
        repo_url: Optional[str] = None,
        branch: Optional[str] = None,
        commit: Optional[str] = None,
        max_runtime_secs: Optional[int] = None,
        environment_vars: Optional[Mapping[str, str]] = None,
        initial_command: Optional[str] = None,
        image: Optional[str] = None,
        resources: Optional[Mapping[str, Any]] = None,
        snapshot_id: Optional[Union[str, Snapshot]] = None,
        *,
        network: Optional[Union[str, Mapping[str, Any]]] = None,
        extra: Optional[Mapping[str, Any]] = None,
        image_id: Optional[str] = None,
        depth: Optional[int] = None,
    ) -> "Sandbox":
        """Creates a sandbox (returns once it is running). ``with client.create(...) as
        box:`` destroys it at the end of the block."""
        box: Sandbox = self._call(
            core.create_container(
                repo_url,
                branch=branch,
                commit=commit,
                max_runtime_secs=max_runtime_secs,
                environment_vars=environment_vars,
                initial_command=initial_command,
                image=image,
                resources=resources,
                snapshot_id=snapshot_id,
                network=network,
                extra=extra,
                image_id=image_id,
                depth=depth,
            )
        )
        return box

    def list(self) -> "List[Sandbox]":
        return self._call(core.list_containers())

    def get(self, container_id: str) -> "Sandbox":
        box: Sandbox = self._call(core.get_container(container_id))
        return box

    def destroy(self, container_id: str) -> None:
        self._call(core.destroy_container(container_id))


class Sandbox(ContainerInfo):
    """A sandbox: its fields (as of the last answer) plus what can be done with it."""

    _client: Client
    #: Long-running processes of this sandbox.
    processes: "Processes"

    @classmethod
    def _bind(cls, client: Client, info: ContainerInfo) -> "Sandbox":
        box = cls.__new__(cls)
        box._assign(info)
        box._client = client
        box.processes = Processes(client, box)
        return box

    def __repr__(self) -> str:
        return "Sandbox(container_id={!r}, status={!r}, repo_url={!r})".format(
            self.container_id, self.status, self.repo_url
        )

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        try:
            self.destroy()
        except NotFound:
            pass
        except RepoboxError:
            if exc is None:
                raise  # else the body's own exception is the one to see

    def refresh(self) -> "Sandbox":
        """Reads the sandbox again (status, expiry) into this object."""
        self._assign(self._client._call(core.get_container_info(self.container_id)))
        return self

    def exec(
        self,
        command: str,
        timeout_secs: Optional[int] = None,
        stdin: Optional[Union[str, bytes]] = None,
        working_directory: Optional[str] = None,
        environment_vars: Optional[Mapping[str, str]] = None,
    ) -> ExecResult:
        """Runs ``command`` (by bash) to its end; a non-zero exit is not an error."""
        return self._client._call(
            core.execute(self.container_id, command, timeout_secs, stdin, working_directory, environment_vars)
        )

    def stream(
        self,
        command: str,
        timeout_secs: Optional[int] = None,
        stdin: Optional[Union[str, bytes]] = None,
        working_directory: Optional[str] = None,
        environment_vars: Optional[Mapping[str, str]] = None,
    ) -> Iterator[Any]:
        """Runs ``command`` and yields :class:`StdoutEvent`/:class:`StderrEvent` as the
        output comes, then one :class:`ExitEvent`. Leaving the loop early kills it."""
        return self._client._events(
            core.execute_stream(self.container_id, command, timeout_secs, stdin, working_directory, environment_vars)
        )

    def read_file(self, path: str) -> bytes:
        """The exact bytes of a file (any size)."""
        return self._client._call(core.read_file(self.container_id, path))

    def write_file(self, path: str, data: Union[bytes, bytearray, str]) -> FileSystemItem:
        """Writes ``data`` (text as UTF-8) to ``path``, creating parent directories."""
        return self._client._call(core.write_file(self.container_id, path, data))

    def ports(self) -> List[Port]:
        """The TCP ports listening inside the sandbox, each with a process holding it."""
        return self._client._call(core.list_ports(self.container_id))

    def egress(self) -> Egress:
        """The sandbox's allow-list (``network={"allow": [...]}`` on create) and what its
        egress proxy allowed and refused, oldest first."""
        return self._client._call(core.get_egress(self.container_id))

    def port_url(self, port: int, path: str = "/", with_token: bool = True) -> str:
        """The URL of ``path`` on the server listening at ``port`` in the sandbox (any
        HTTP, WebSockets included; the sandbox needs no network). With an API key and
        ``with_token``, it carries ``?access_token=`` so that it opens in a browser:
        share it as you would the key. Programs that send the key as a header pass
        ``with_token=False``."""
        key = self._client.api_key if with_token else None
        return core.port_url(self._client.url, self.container_id, port, path, key)

    def read_archive(self, path: str) -> bytes:
        """A tar of ``path``: a directory with everything under it (entries named
        from the directory's own name), a file, or a symlink as a link."""
        return self._client._call(core.read_archive(self.container_id, path))

    def write_archive(self, path: str, data: Union[bytes, bytearray]) -> None:
        """Unpacks the tar ``data`` into the existing directory ``path``."""
        self._client._call(core.write_archive(self.container_id, path, data))

    def list_dir(self, path: str = "/workspace") -> List[FileSystemItem]:
        """The entries of a directory, sorted by name."""
        return self._client._call(core.browse(self.container_id, path))

    def extend(self, secs: Optional[int]) -> "Sandbox":
        """The sandbox now expires ``secs`` from now (``None``: never)."""
        self._assign(self._client._call(core.update_container(self.container_id, secs)))
        return self

    def snapshot(self, name: Optional[str] = None) -> Snapshot:
        """Copies the sandbox's filesystem into a snapshot (the sandbox keeps running)."""
        return self._client._call(core.create_snapshot(self.container_id, name))

    def fork(
        self,
        count: int = 1,
        max_runtime_secs: Optional[int] = None,
        environment_vars: Optional[Mapping[str, str]] = None,
    ) -> ForkResult:
        """``count`` new sandboxes on a snapshot of this one: a list of :class:`Sandbox`
        or, for a copy that failed, its :class:`RepoboxError` (``.snapshot_id`` too)."""
        return self._client._call(core.fork(self.container_id, count, max_runtime_secs, environment_vars))

    def destroy(self) -> None:
        self._client._call(core.destroy_container(self.container_id))
        self.status = "destroyed"


class Processes:
    """``box.processes``: long-running commands of one sandbox."""

    def __init__(self, client: Client, box: Any) -> None:
        self._client = client
        self._box = box

    def start(
        self,
        command: str,
        timeout_secs: Optional[int] = None,
        working_directory: Optional[str] = None,
        environment_vars: Optional[Mapping[str, str]] = None,
        stdin_open: bool = False,
        tty: bool = False,
    ) -> Process:
        return self._client._call(
            core.start_process(self._box, command, timeout_secs, working_directory, environment_vars, stdin_open, tty)
        )

    def list(self) -> List[Process]:
        return self._client._call(core.list_processes(self._box))

    def get(self, process_id: Union[str, Process]) -> Process:
        return self._client._call(core.get_process(self._box, process_id))

    def output(
        self,
        process_id: Union[str, Process],
        stdout_offset: Optional[int] = None,
        stderr_offset: Optional[int] = None,
    ) -> ProcessOutput:
        return self._client._call(core.process_output(self._box, process_id, stdout_offset, stderr_offset))

    def stream(
        self,
        process_id: Union[str, Process],
        stdout_offset: Optional[int] = None,
        stderr_offset: Optional[int] = None,
    ) -> Iterator[Any]:
        """Kept output from the offsets, then live, then an :class:`ExitEvent`. Leaving
        the loop does not stop the process."""
        return self._client._events(core.process_stream(self._box, process_id, stdout_offset, stderr_offset))

    def stdin(self, process_id: Union[str, Process], data: Union[str, bytes, None] = None, eof: bool = False) -> None:
        """Writes to a process started with ``stdin_open=True``; ``eof`` closes it."""
        self._client._call(core.process_stdin(self._box, process_id, data, eof))

    def kill(self, process_id: Union[str, Process], signal: Union[str, int] = "SIGTERM") -> None:
        """Sends ``signal`` (name or number) to everything the process started."""
        self._client._call(core.signal_process(self._box, process_id, signal))

    def remove(self, process_id: Union[str, Process]) -> None:
        """Kills it if running and forgets it."""
        self._client._call(core.remove_process(self._box, process_id))

    def wait(self, process_id: Union[str, Process], timeout: Optional[float] = None, interval: float = 0.2) -> Process:
        """Polls until the process is no longer running (``TimeoutError`` after ``timeout``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            process = self.get(process_id)
            if process.status != "running":
                return process
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("process {} still running after {}s".format(process.process_id, timeout))
            time.sleep(interval)


class Snapshots:
    """``client.snapshots``."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self) -> List[Snapshot]:
        return self._client._call(core.list_snapshots())

    def get(self, snapshot_id: Union[str, Snapshot]) -> Snapshot:
        return self._client._call(core.get_snapshot(snapshot_id))

    def delete(self, snapshot_id: Union[str, Snapshot]) -> None:
        self._client._call(core.delete_snapshot(snapshot_id))


class Jobs:
    """``client.jobs``: one command across many repositories."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def run(
        self,
        command: str,
        repos: Iterable[Any],
        concurrency: Optional[int] = None,
        timeout_secs: Optional[int] = None,
        environment_vars: Optional[Mapping[str, str]] = None,
        image: Optional[str] = None,
        resources: Optional[Mapping[str, Any]] = None,
        network: Optional[Union[str, Mapping[str, Any]]] = None,
        initial_command: Optional[str] = None,
        wait: bool = True,
        wait_timeout: Optional[float] = None,
        image_id: Optional[str] = None,
    ) -> Job:
        """Starts a job; with ``wait`` (default) returns it once finished (then read
        :meth:`results`). ``repos``: URLs, :class:`JobRepo` or dicts."""
        job = self._client._call(
            core.create_job(
                command,
                repos,
                concurrency,
                timeout_secs,
                environment_vars,
                image,
                resources,
                network,
                initial_command,
                image_id=image_id,
            )
        )
        if wait:
            job = self.wait(job, wait_timeout)
        return job

    def wait(self, job_id: Union[str, Job], timeout: Optional[float] = None) -> Job:
        """Blocks until the job has finished (``TimeoutError`` after ``timeout``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        events = self._client._events(core.job_events(job_id, timeout))
        try:
            for event in events:
                if isinstance(event, JobDoneEvent):
                    return event.job
                if deadline is not None and time.monotonic() >= deadline:
                    break
        except TransportError:
            pass  # a broken or timed-out stream: the polling below decides
        finally:
            events.close()  # type: ignore[attr-defined]
        # The stream ended without `done` (or the deadline passed): poll.
        while True:
            job = self.get(job_id)
            if job.finished:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("job {} not finished after {}s".format(job.job_id, timeout))
            time.sleep(0.5)

    def get(self, job_id: Union[str, Job]) -> Job:
        return self._client._call(core.get_job(job_id))

    def list(self) -> List[Job]:
        return self._client._call(core.list_jobs())

    def results(self, job_id: Union[str, Job]) -> List[JobResult]:
        return self._client._call(core.job_results(job_id))

    def events(self, job_id: Union[str, Job]) -> Iterator[Any]:
        """:class:`JobResultEvent` per finished entry, then :class:`JobDoneEvent`."""
        return self._client._events(core.job_events(job_id))

    def cancel(self, job_id: Union[str, Job]) -> Job:
        return self._client._call(core.cancel_job(job_id))

    def delete(self, job_id: Union[str, Job]) -> None:
        self._client._call(core.delete_job(job_id))


class Images:
    """``client.images``: images built from a repository's Dockerfile or devcontainer
    (the server needs ``ALLOW_IMAGE_BUILDS=true``)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def build(
        self,
        repo_url: str,
        recipe: str = "dockerfile",
        branch: Optional[str] = None,
        commit: Optional[str] = None,
        dockerfile: Optional[str] = None,
        build_args: Optional[Mapping[str, str]] = None,
        wait: bool = True,
        wait_timeout: Optional[float] = None,
    ) -> Image:
        """Starts a build (``recipe``: ``dockerfile`` or ``devcontainer``); with ``wait``
        (default) returns the image once ready or failed (check ``status``)."""
        image = self._client._call(core.build_image(repo_url, recipe, branch, commit, dockerfile, build_args))
        if wait and not image.finished:
            image = self.wait(image, wait_timeout)
        return image

    def wait(self, image_id: Union[str, Image], timeout: Optional[float] = None) -> Image:
        """Blocks until the build has ended (``TimeoutError`` after ``timeout``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        events = self._client._events(core.image_logs(image_id, timeout))
        try:
            for event in events:
                if isinstance(event, ImageDoneEvent):
                    return event.image
                if deadline is not None and time.monotonic() >= deadline:
                    break
        except TransportError:
            pass  # a broken or timed-out stream: the polling below decides
        finally:
            events.close()  # type: ignore[attr-defined]
        while True:
            image = self.get(image_id)
            if image.finished:
                return image
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("image {} not built after {}s".format(image.image_id, timeout))
            time.sleep(0.5)

    def logs(self, image_id: Union[str, Image]) -> Iterator[Any]:
        """:class:`ImageLogEvent` per chunk of output, then :class:`ImageDoneEvent`."""
        return self._client._events(core.image_logs(image_id))

    def get(self, image_id: Union[str, Image]) -> Image:
        return self._client._call(core.get_image(image_id))

    def list(self) -> List[Image]:
        return self._client._call(core.list_images())

    def delete(self, image_id: Union[str, Image]) -> None:
        self._client._call(core.delete_image(image_id))
