"""The asynchronous client (on :class:`httpx.AsyncClient`): the same surface as
:mod:`repobox.client`, with ``await`` and ``async for``."""

import asyncio
import time
from types import TracebackType
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Dict,
    Generator,
    Iterable,
    List,
    Mapping,
    Optional,
    Type,
    Union,
)

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

__all__ = ["AsyncClient", "AsyncSandbox", "AsyncProcesses", "AsyncSnapshots", "AsyncJobs", "AsyncImages"]


class AsyncClient:
    """A repobox server, asynchronously. Same arguments as :class:`repobox.Client`;
    use ``async with AsyncClient() as client:`` or ``await client.aclose()``."""

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        timeout: Optional[float] = core.DEFAULT_TIMEOUT,
        *,
        http_client: Optional[httpx.AsyncClient] = None,
    ) -> None:
        self.url, self.api_key = core.resolve_settings(url, api_key)
        self.timeout = timeout
        self._http = http_client or httpx.AsyncClient(
            base_url=self.url, headers=core.client_headers(self.api_key), timeout=timeout
        )
        self.snapshots = AsyncSnapshots(self)
        self.jobs = AsyncJobs(self)
        self.images = AsyncImages(self)

    async def _send(self, op: "Op[Any]", stream: bool = False) -> httpx.Response:
        request = self._http.build_request(op.method, op.path, **op.request_kwargs(self.timeout))
        try:
            try:
                return await self._http.send(request, stream=stream)
            except httpx.HTTPError as exc:
                if not core.retryable(exc):
                    raise
                return await self._http.send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise core.wrap_transport(exc, op.method, op.path) from exc

    async def _call(self, op: "Op[T]") -> T:
        response = await self._send(op)
        core.raise_for_status(response)
        return op.parse(response, self)

    async def _events(self, op: "Op[Any]") -> AsyncIterator[Any]:
        response = await self._send(op, stream=True)
        try:
            if response.status_code >= 400:
                await response.aread()
                core.raise_for_status(response)
            decoder = core.SSEDecoder()
            async for line in response.aiter_lines():
                event = decoder.feed(line)
                if event is not None:
                    yield op.event(*event)  # type: ignore[misc]
            event = decoder.finish()
            if event is not None:
                yield op.event(*event)  # type: ignore[misc]
        except httpx.HTTPError as exc:
            raise core.wrap_transport(exc, op.method, op.path) from exc
        finally:
            await response.aclose()

    def _sandbox(self, data: Dict[str, Any]) -> "AsyncSandbox":
        return AsyncSandbox._bind(self, ContainerInfo.from_dict(data))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def health(self) -> Health:
        return await self._call(core.health())

    async def info(self) -> Info:
        return await self._call(core.info())

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
    ) -> "_Creating":
        """``box = await client.create(...)``, or ``async with client.create(...) as box:``
        (destroyed at the end of the block)."""
        op = core.create_container(
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
        return _Creating(self._call(op))

    async def list(self) -> "List[AsyncSandbox]":
        return await self._call(core.list_containers())

    async def get(self, container_id: str) -> "AsyncSandbox":
        return await self._call(core.get_container(container_id))

    async def destroy(self, container_id: str) -> None:
        await self._call(core.destroy_container(container_id))


class _Creating:
    """The pending result of :meth:`AsyncClient.create`: await it, or enter it."""

    def __init__(self, call: "Awaitable[AsyncSandbox]") -> None:
        self._call = call
        self._box: Optional[AsyncSandbox] = None

    def __await__(self) -> "Generator[Any, None, AsyncSandbox]":
        return self._call.__await__()

    async def __aenter__(self) -> "AsyncSandbox":
        self._box = await self._call
        return self._box

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._box is not None:
            await self._box.__aexit__(*exc_info)


class AsyncSandbox(ContainerInfo):
    """A sandbox (async): its fields plus what can be done with it."""

    _client: AsyncClient
    #: Long-running processes of this sandbox.
    processes: "AsyncProcesses"

    @classmethod
    def _bind(cls, client: AsyncClient, info: ContainerInfo) -> "AsyncSandbox":
        box = cls.__new__(cls)
        box._assign(info)
        box._client = client
        box.processes = AsyncProcesses(client, box)
        return box

    def __repr__(self) -> str:
        return "AsyncSandbox(container_id={!r}, status={!r}, repo_url={!r})".format(
            self.container_id, self.status, self.repo_url
        )

    async def __aenter__(self) -> "AsyncSandbox":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        try:
            await self.destroy()
        except NotFound:
            pass
        except RepoboxError:
            if exc is None:
                raise

    async def refresh(self) -> "AsyncSandbox":
        info = await self._client._call(core.get_container_info(self.container_id))
        self._assign(info)
        return self

    async def exec(
        self,
        command: str,
        timeout_secs: Optional[int] = None,
        stdin: Optional[Union[str, bytes]] = None,
        working_directory: Optional[str] = None,
        environment_vars: Optional[Mapping[str, str]] = None,
    ) -> ExecResult:
        return await self._client._call(
            core.execute(self.container_id, command, timeout_secs, stdin, working_directory, environment_vars)
        )

    def stream(
        self,
        command: str,
        timeout_secs: Optional[int] = None,
        stdin: Optional[Union[str, bytes]] = None,
        working_directory: Optional[str] = None,
        environment_vars: Optional[Mapping[str, str]] = None,
    ) -> AsyncIterator[Any]:
        """``async for event in box.stream(...)``: see :meth:`repobox.Sandbox.stream`."""
        return self._client._events(
            core.execute_stream(self.container_id, command, timeout_secs, stdin, working_directory, environment_vars)
        )

    async def read_file(self, path: str) -> bytes:
        return await self._client._call(core.read_file(self.container_id, path))

    async def write_file(self, path: str, data: Union[bytes, bytearray, str]) -> FileSystemItem:
        return await self._client._call(core.write_file(self.container_id, path, data))

    async def egress(self) -> Egress:
        """The sandbox's allow-list and its egress proxy's decisions, oldest first."""
        return await self._client._call(core.get_egress(self.container_id))

    async def ports(self) -> List[Port]:
        """The TCP ports listening inside the sandbox, each with a process holding it."""
        return await self._client._call(core.list_ports(self.container_id))

    def port_url(self, port: int, path: str = "/", with_token: bool = True) -> str:
        """The URL of ``path`` on the server listening at ``port`` in the sandbox (any
        HTTP, WebSockets included; the sandbox needs no network). With an API key and
        ``with_token``, it carries ``?access_token=`` so that it opens in a browser:
        share it as you would the key. Programs that send the key as a header pass
        ``with_token=False``."""
        key = self._client.api_key if with_token else None
        return core.port_url(self._client.url, self.container_id, port, path, key)

    async def read_archive(self, path: str) -> bytes:
        return await self._client._call(core.read_archive(self.container_id, path))

    async def write_archive(self, path: str, data: Union[bytes, bytearray]) -> None:
        await self._client._call(core.write_archive(self.container_id, path, data))

    async def list_dir(self, path: str = "/workspace") -> List[FileSystemItem]:
        return await self._client._call(core.browse(self.container_id, path))

    async def extend(self, secs: Optional[int]) -> "AsyncSandbox":
        info = await self._client._call(core.update_container(self.container_id, secs))
        self._assign(info)
        return self

    async def snapshot(self, name: Optional[str] = None) -> Snapshot:
        return await self._client._call(core.create_snapshot(self.container_id, name))

    async def fork(
        self,
        count: int = 1,
        max_runtime_secs: Optional[int] = None,
        environment_vars: Optional[Mapping[str, str]] = None,
    ) -> ForkResult:
        return await self._client._call(core.fork(self.container_id, count, max_runtime_secs, environment_vars))

    async def destroy(self) -> None:
        await self._client._call(core.destroy_container(self.container_id))
        self.status = "destroyed"


class AsyncProcesses:
    """``box.processes`` (async)."""

    def __init__(self, client: AsyncClient, box: Any) -> None:
        self._client = client
        self._box = box

    async def start(
        self,
        command: str,
        timeout_secs: Optional[int] = None,
        working_directory: Optional[str] = None,
        environment_vars: Optional[Mapping[str, str]] = None,
        stdin_open: bool = False,
        tty: bool = False,
    ) -> Process:
        return await self._client._call(
            core.start_process(self._box, command, timeout_secs, working_directory, environment_vars, stdin_open, tty)
        )

    async def list(self) -> List[Process]:
        return await self._client._call(core.list_processes(self._box))

    async def get(self, process_id: Union[str, Process]) -> Process:
        return await self._client._call(core.get_process(self._box, process_id))

    async def output(
        self,
        process_id: Union[str, Process],
        stdout_offset: Optional[int] = None,
        stderr_offset: Optional[int] = None,
    ) -> ProcessOutput:
        return await self._client._call(core.process_output(self._box, process_id, stdout_offset, stderr_offset))

    def stream(
        self,
        process_id: Union[str, Process],
        stdout_offset: Optional[int] = None,
        stderr_offset: Optional[int] = None,
    ) -> AsyncIterator[Any]:
        return self._client._events(core.process_stream(self._box, process_id, stdout_offset, stderr_offset))

    async def stdin(
        self, process_id: Union[str, Process], data: Union[str, bytes, None] = None, eof: bool = False
    ) -> None:
        await self._client._call(core.process_stdin(self._box, process_id, data, eof))

    async def kill(self, process_id: Union[str, Process], signal: Union[str, int] = "SIGTERM") -> None:
        await self._client._call(core.signal_process(self._box, process_id, signal))

    async def remove(self, process_id: Union[str, Process]) -> None:
        await self._client._call(core.remove_process(self._box, process_id))

    async def wait(
        self, process_id: Union[str, Process], timeout: Optional[float] = None, interval: float = 0.2
    ) -> Process:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            process = await self.get(process_id)
            if process.status != "running":
                return process
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("process {} still running after {}s".format(process.process_id, timeout))
            await asyncio.sleep(interval)


class AsyncSnapshots:
    """``client.snapshots`` (async)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(self) -> List[Snapshot]:
        return await self._client._call(core.list_snapshots())

    async def get(self, snapshot_id: Union[str, Snapshot]) -> Snapshot:
        return await self._client._call(core.get_snapshot(snapshot_id))

    async def delete(self, snapshot_id: Union[str, Snapshot]) -> None:
        await self._client._call(core.delete_snapshot(snapshot_id))


class AsyncJobs:
    """``client.jobs`` (async)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def run(
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
        job = await self._client._call(
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
            job = await self.wait(job, wait_timeout)
        return job

    async def wait(self, job_id: Union[str, Job], timeout: Optional[float] = None) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout
        events = self._client._events(core.job_events(job_id, timeout))
        try:
            async for event in events:
                if isinstance(event, JobDoneEvent):
                    return event.job
                if deadline is not None and time.monotonic() >= deadline:
                    break
        except TransportError:
            pass
        finally:
            await events.aclose()  # type: ignore[attr-defined]
        while True:
            job = await self.get(job_id)
            if job.finished:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("job {} not finished after {}s".format(job.job_id, timeout))
            await asyncio.sleep(0.5)

    async def get(self, job_id: Union[str, Job]) -> Job:
        return await self._client._call(core.get_job(job_id))

    async def list(self) -> List[Job]:
        return await self._client._call(core.list_jobs())

    async def results(self, job_id: Union[str, Job]) -> List[JobResult]:
        return await self._client._call(core.job_results(job_id))

    def events(self, job_id: Union[str, Job]) -> AsyncIterator[Any]:
        return self._client._events(core.job_events(job_id))

    async def cancel(self, job_id: Union[str, Job]) -> Job:
        return await self._client._call(core.cancel_job(job_id))

    async def delete(self, job_id: Union[str, Job]) -> None:
        await self._client._call(core.delete_job(job_id))


class AsyncImages:
    """``client.images`` of the async client."""

    def __init__(self, client: "AsyncClient") -> None:
        self._client = client

    async def build(
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
        image = await self._client._call(core.build_image(repo_url, recipe, branch, commit, dockerfile, build_args))
        if wait and not image.finished:
            image = await self.wait(image, wait_timeout)
        return image

    async def wait(self, image_id: Union[str, Image], timeout: Optional[float] = None) -> Image:
        deadline = None if timeout is None else time.monotonic() + timeout
        events = self._client._events(core.image_logs(image_id, timeout))
        try:
            async for event in events:
                if isinstance(event, ImageDoneEvent):
                    return event.image
                if deadline is not None and time.monotonic() >= deadline:
                    break
        except TransportError:
            pass
        finally:
            await events.aclose()  # type: ignore[attr-defined]
        while True:
            image = await self.get(image_id)
            if image.finished:
                return image
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("image {} not built after {}s".format(image.image_id, timeout))
            await asyncio.sleep(0.5)

    def logs(self, image_id: Union[str, Image]) -> AsyncIterator[Any]:
        return self._client._events(core.image_logs(image_id))

    async def get(self, image_id: Union[str, Image]) -> Image:
        return await self._client._call(core.get_image(image_id))

    async def list(self) -> List[Image]:
        return await self._client._call(core.list_images())

    async def delete(self, image_id: Union[str, Image]) -> None:
        await self._client._call(core.delete_image(image_id))
