"""What the sync and async clients share: each API call as an :class:`Op` (how to
build the request, how to read the answer), error mapping and the SSE decoder.

The clients only send an Op and hand the answer to its ``parse``; so every request
shape and every model conversion is written once, here.
"""

import base64
import json
import os
from typing import (
    Any,
    Callable,
    Dict,
    Generic,
    Iterable,
    List,
    Mapping,
    Optional,
    Tuple,
    TypeVar,
    Union,
)
from urllib.parse import quote

import httpx

from .errors import APIError, RepoboxError, TransportError, error_for_status
from .models import (
    ContainerInfo,
    ErrorEvent,
    ExecResult,
    ExitEvent,
    FileSystemItem,
    Health,
    Info,
    Job,
    JobDoneEvent,
    Image,
    ImageDoneEvent,
    ImageLogEvent,
    JobRepo,
    JobResult,
    JobResultEvent,
    Port,
    Egress,
    Process,
    ProcessOutput,
    Snapshot,
    StderrEvent,
    StdoutEvent,
    UnknownEvent,
)

T = TypeVar("T")

API_PREFIX = "/api/v1"
DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 120.0
#: Extra read time allowed beyond a command's own ``timeout_secs``.
EXEC_MARGIN_SECS = 30.0
#: The server's default ``timeout_secs`` for a command.
DEFAULT_EXEC_TIMEOUT_SECS = 30.0
#: Creating a sandbox clones, starts a container and may run an initial command.
CREATE_MIN_READ_SECS = 600.0
UNBOUNDED = float("inf")


def resolve_settings(
    url: Optional[str], api_key: Optional[str]
) -> Tuple[str, Optional[str]]:
    """The base URL and key, from the arguments or ``REPOBOX_URL``/``REPOBOX_API_KEY``."""
    base = url or os.environ.get("REPOBOX_URL") or DEFAULT_URL
    base = base.rstrip("/")
    if base.endswith(API_PREFIX):
        base = base[: -len(API_PREFIX)]
    key = api_key if api_key is not None else os.environ.get("REPOBOX_API_KEY")
    return base, (key or None)


def client_headers(api_key: Optional[str]) -> Dict[str, str]:
    from . import __version__

    headers = {"User-Agent": "repobox-python/{}".format(__version__), "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = "Bearer {}".format(api_key)
    return headers


def _seg(value: Any) -> str:
    """One path segment (an id, or a model carrying one)."""
    for attr in ("container_id", "snapshot_id", "process_id", "job_id", "image_id"):
        if hasattr(value, attr):
            value = getattr(value, attr)
            break
    return quote(str(value), safe="")


def _drop_none(data: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


class Op(Generic[T]):
    """One API call: request parts plus ``parse(response, client) -> T``.

    ``min_read`` raises the read timeout above the client's for calls that wait on
    the sandbox (``UNBOUNDED``: no read timeout). ``event`` turns an SSE event
    ``(name, data)`` into a model, for streaming ops.
    """

    __slots__ = ("method", "path", "params", "json", "content", "headers", "parse", "min_read", "event")

    def __init__(
        self,
        method: str,
        path: str,
        parse: Callable[[httpx.Response, Any], T],
        *,
        params: Optional[Dict[str, Any]] = None,
        json: Any = None,
        content: Optional[bytes] = None,
        headers: Optional[Dict[str, str]] = None,
        min_read: Optional[float] = None,
        event: Optional[Callable[[str, Any], Any]] = None,
    ) -> None:
        self.method = method
        self.path = API_PREFIX + path
        self.parse = parse
        self.params = _drop_none(params) if params else None
        self.json = json
        self.content = content
        self.headers = headers
        self.min_read = min_read
        self.event = event

    def request_kwargs(self, client_timeout: Optional[float]) -> Dict[str, Any]:
        kwargs: Dict[str, Any] = {}
        if self.params:
            kwargs["params"] = self.params
        if self.json is not None:
            kwargs["json"] = self.json
        if self.content is not None:
            kwargs["content"] = self.content
        if self.headers:
            kwargs["headers"] = self.headers
        if self.min_read is not None:
            read: Optional[float]
            if self.min_read == UNBOUNDED or client_timeout is None:
                read = None
            else:
                read = max(client_timeout, self.min_read)
            kwargs["timeout"] = httpx.Timeout(client_timeout, read=read)
        return kwargs


# --- responses -----------------------------------------------------------------------


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise APIError(
            "HTTP {}: the answer is not JSON".format(response.status_code),
            status=response.status_code,
            detail=response.text[:2000],
        ) from exc


def raise_for_status(response: httpx.Response) -> None:
    """Raises the mapped :class:`RepoboxError` for an error answer (body already read)."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    raise error_for_status(response.status_code, body, response.text)


def wrap_transport(exc: Exception, method: str, url: str) -> TransportError:
    return TransportError(
        "{} {} failed: {}: {}".format(method, url, type(exc).__name__, exc) if str(exc)
        else "{} {} failed: {}".format(method, url, type(exc).__name__),
        detail=str(exc) or type(exc).__name__,
    )


def retryable(exc: Exception) -> bool:
    """Whether a failed send surely never reached the server's handlers, so that sending
    it again (once, on a new connection) cannot do anything twice.

    The case met in practice: the server closes a keep-alive connection after an error
    answer it sent before reading the request's body, without saying so
    (``Connection: close``); the next request on that connection then finds it closed
    and gets no answer at all.
    """
    if isinstance(exc, httpx.WriteError):
        return True
    return isinstance(exc, httpx.RemoteProtocolError) and "without sending a response" in str(exc)


def _none(response: httpx.Response, client: Any) -> None:
    return None


def _sandbox(response: httpx.Response, client: Any) -> Any:
    return client._sandbox(_json(response))


def _model(cls: Any, key: Optional[str] = None) -> Callable[[httpx.Response, Any], Any]:
    def parse(response: httpx.Response, client: Any) -> Any:
        data = _json(response)
        return cls.from_dict(data[key] if key else data)

    return parse


def _models(cls: Any, key: str) -> Callable[[httpx.Response, Any], List[Any]]:
    def parse(response: httpx.Response, client: Any) -> List[Any]:
        return [cls.from_dict(item) for item in _json(response).get(key, [])]

    return parse


def error_from_body(body: Any) -> RepoboxError:
    """An error carried inside an answer (not raised by the server's status)."""
    if not isinstance(body, dict):
        body = {"detail": str(body)}
    status = body.get("status") if isinstance(body.get("status"), int) else None
    if status is not None:
        return error_for_status(status, body)
    error, detail = body.get("error"), body.get("detail")
    message = str(error or "error") + (": " + str(detail) if detail else "")
    return APIError(message, error=error, detail=detail, timestamp=body.get("timestamp"), body=body)


class ForkResult(List[Any]):
    """The copies made by ``fork``, in order: each a sandbox, or the
    :class:`RepoboxError` that says why that copy could not be made (not raised)."""

    snapshot_id: str = ""

    @property
    def sandboxes(self) -> List[Any]:
        return [entry for entry in self if not isinstance(entry, RepoboxError)]

    @property
    def errors(self) -> List[RepoboxError]:
        return [entry for entry in self if isinstance(entry, RepoboxError)]


def _fork(response: httpx.Response, client: Any) -> ForkResult:
    data = _json(response)
    result = ForkResult()
    result.snapshot_id = data.get("snapshot_id", "")
    for entry in data.get("forks", []):
        if isinstance(entry, dict) and "container" in entry:
            result.append(client._sandbox(entry["container"]))
        else:
            result.append(error_from_body(entry.get("error") if isinstance(entry, dict) else entry))
    return result


# --- SSE -----------------------------------------------------------------------------


class SSEDecoder:
    """Server-Sent Events framing: feed it lines (without their ends), get
    ``(event, data)`` pairs for each complete event."""

    def __init__(self) -> None:
        self._event = ""
        self._data: List[str] = []

    def feed(self, line: str) -> Optional[Tuple[str, str]]:
        if line == "":
            if not self._data and not self._event:
                return None
            out = (self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return out
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None

    def finish(self) -> Optional[Tuple[str, str]]:
        """An event left unterminated when the stream ended."""
        if self._data:
            return self.feed("")
        return None


def _decode_data(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return data


def exec_event(name: str, data: str) -> Any:
    value = _decode_data(data)
    if isinstance(value, dict):
        if name == "stdout":
            return StdoutEvent.from_dict(value)
        if name == "stderr":
            return StderrEvent.from_dict(value)
        if name == "exit":
            return ExitEvent.from_dict(value)
        if name == "error":
            return ErrorEvent.from_dict(value)
    elif name == "error":
        return ErrorEvent(detail=str(value))
    return UnknownEvent(name, value)


def job_event(name: str, data: str) -> Any:
    value = _decode_data(data)
    if isinstance(value, dict):
        if name == "result":
            return JobResultEvent(JobResult.from_dict(value))
        if name == "done":
            return JobDoneEvent(Job.from_dict(value))
        if name == "error":
            return ErrorEvent.from_dict(value)
    return UnknownEvent(name, value)


def image_event(name: str, data: str) -> Any:
    if name == "log":
        return ImageLogEvent(data)
    value = _decode_data(data)
    if isinstance(value, dict):
        if name == "done":
            return ImageDoneEvent(Image.from_dict(value))
        if name == "error":
            return ErrorEvent.from_dict(value)
    return UnknownEvent(name, value)


# --- the API, one builder per call ---------------------------------------------------

Resources = Mapping[str, Any]


def health() -> Op[Health]:
    return Op("GET", "/health", _model(Health))


def info() -> Op[Info]:
    return Op("GET", "/info", _model(Info))


def create_container(
    repo_url: Optional[str],
    *,
    branch: Optional[str] = None,
    commit: Optional[str] = None,
    max_runtime_secs: Optional[int] = None,
    environment_vars: Optional[Mapping[str, str]] = None,
    initial_command: Optional[str] = None,
    image: Optional[str] = None,
    resources: Optional[Resources] = None,
    snapshot_id: Optional[Any] = None,
    network: Optional[Union[str, Mapping[str, Any]]] = None,
    extra: Optional[Mapping[str, Any]] = None,
    image_id: Optional[str] = None,
    depth: Optional[int] = None,
) -> Op[Any]:
    body = _drop_none(
        {
            "repo_url": repo_url,
            "branch": branch,
            "commit": commit,
            "max_runtime_secs": max_runtime_secs,
            "environment_vars": dict(environment_vars) if environment_vars is not None else None,
            "initial_command": initial_command,
            "image": image,
            "resources": dict(resources) if resources is not None else None,
            "snapshot_id": getattr(snapshot_id, "snapshot_id", snapshot_id),
            "network": network,
            "image_id": image_id,
            "depth": depth,
        }
    )
    if extra:
        body.update(extra)
    return Op("POST", "/containers", _sandbox, json=body, min_read=CREATE_MIN_READ_SECS)


def list_containers() -> Op[List[Any]]:
    def parse(response: httpx.Response, client: Any) -> List[Any]:
        return [client._sandbox(item) for item in _json(response).get("containers", [])]

    return Op("GET", "/containers", parse)


def get_container(container_id: Any) -> Op[Any]:
    return Op("GET", "/containers/" + _seg(container_id), _sandbox)


def get_container_info(container_id: Any) -> Op[ContainerInfo]:
    return Op("GET", "/containers/" + _seg(container_id), _model(ContainerInfo))


def destroy_container(container_id: Any) -> Op[None]:
    return Op("DELETE", "/containers/" + _seg(container_id), _none)


def update_container(container_id: Any, max_runtime_secs: Optional[int]) -> Op[ContainerInfo]:
    return Op(
        "PATCH",
        "/containers/" + _seg(container_id),
        _model(ContainerInfo),
        json={"max_runtime_secs": max_runtime_secs},
    )


def _exec_body(
    command: str,
    timeout_secs: Optional[int],
    stdin: Optional[Union[str, bytes]],
    working_directory: Optional[str],
    environment_vars: Optional[Mapping[str, str]],
) -> Dict[str, Any]:
    if isinstance(stdin, (bytes, bytearray)):
        # The API takes text; bytes must be UTF-8 (there is no base64 form for execute).
        stdin = bytes(stdin).decode("utf-8")
    return _drop_none(
        {
            "command": command,
            "timeout_secs": timeout_secs,
            "stdin": stdin,
            "working_directory": working_directory,
            "environment": dict(environment_vars) if environment_vars is not None else None,
        }
    )


def _exec_read(timeout_secs: Optional[int]) -> float:
    return float(timeout_secs if timeout_secs is not None else DEFAULT_EXEC_TIMEOUT_SECS) + EXEC_MARGIN_SECS


def execute(
    container_id: Any,
    command: str,
    timeout_secs: Optional[int] = None,
    stdin: Optional[Union[str, bytes]] = None,
    working_directory: Optional[str] = None,
    environment_vars: Optional[Mapping[str, str]] = None,
) -> Op[ExecResult]:
    return Op(
        "POST",
        "/containers/{}/execute".format(_seg(container_id)),
        _model(ExecResult),
        json=_exec_body(command, timeout_secs, stdin, working_directory, environment_vars),
        min_read=_exec_read(timeout_secs),
    )


def execute_stream(
    container_id: Any,
    command: str,
    timeout_secs: Optional[int] = None,
    stdin: Optional[Union[str, bytes]] = None,
    working_directory: Optional[str] = None,
    environment_vars: Optional[Mapping[str, str]] = None,
) -> Op[None]:
    return Op(
        "POST",
        "/containers/{}/execute/stream".format(_seg(container_id)),
        _none,
        json=_exec_body(command, timeout_secs, stdin, working_directory, environment_vars),
        headers={"Accept": "text/event-stream"},
        min_read=_exec_read(timeout_secs),
        event=exec_event,
    )


def read_file(container_id: Any, path: str) -> Op[bytes]:
    return Op(
        "GET",
        "/containers/{}/files/raw".format(_seg(container_id)),
        lambda response, client: response.content,
        params={"file_path": path},
        headers={"Accept": "application/octet-stream, application/json"},
        min_read=UNBOUNDED,
    )


def write_file(container_id: Any, path: str, data: Union[bytes, bytearray, str]) -> Op[FileSystemItem]:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return Op(
        "PUT",
        "/containers/{}/files/raw".format(_seg(container_id)),
        _model(FileSystemItem),
        params={"file_path": path},
        content=bytes(data),
        headers={"Content-Type": "application/octet-stream"},
        min_read=UNBOUNDED,
    )


def read_archive(container_id: Any, path: str) -> Op[bytes]:
    return Op(
        "GET",
        "/containers/{}/archive".format(_seg(container_id)),
        lambda response, client: response.content,
        params={"path": path},
        headers={"Accept": "application/x-tar, application/json"},
        min_read=UNBOUNDED,
    )


def write_archive(container_id: Any, path: str, data: Union[bytes, bytearray]) -> Op[None]:
    return Op(
        "PUT",
        "/containers/{}/archive".format(_seg(container_id)),
        _none,
        params={"path": path},
        content=bytes(data),
        headers={"Content-Type": "application/x-tar"},
        min_read=UNBOUNDED,
    )


def browse(container_id: Any, path: str) -> Op[List[FileSystemItem]]:
    return Op(
        "GET",
        "/containers/{}/browse".format(_seg(container_id)),
        _models(FileSystemItem, "items"),
        params={"path": path},
    )


def create_snapshot(container_id: Any, name: Optional[str]) -> Op[Snapshot]:
    return Op(
        "POST",
        "/containers/{}/snapshots".format(_seg(container_id)),
        _model(Snapshot),
        json=_drop_none({"name": name}),
        min_read=CREATE_MIN_READ_SECS,
    )


def fork(
    container_id: Any,
    count: int,
    max_runtime_secs: Optional[int] = None,
    environment_vars: Optional[Mapping[str, str]] = None,
) -> Op[ForkResult]:
    return Op(
        "POST",
        "/containers/{}/fork".format(_seg(container_id)),
        _fork,
        json=_drop_none(
            {
                "count": count,
                "max_runtime_secs": max_runtime_secs,
                "environment_vars": dict(environment_vars) if environment_vars is not None else None,
            }
        ),
        min_read=CREATE_MIN_READ_SECS,
    )


def list_snapshots() -> Op[List[Snapshot]]:
    return Op("GET", "/snapshots", _models(Snapshot, "snapshots"))


def get_snapshot(snapshot_id: Any) -> Op[Snapshot]:
    return Op("GET", "/snapshots/" + _seg(snapshot_id), _model(Snapshot))


def delete_snapshot(snapshot_id: Any) -> Op[None]:
    return Op("DELETE", "/snapshots/" + _seg(snapshot_id), _none)


# ports


def _port_list(response: httpx.Response, client: Any) -> List[Port]:
    return [Port.from_dict(item) for item in _json(response)]


def list_ports(container_id: Any) -> Op[List[Port]]:
    return Op("GET", "/containers/{}/ports".format(_seg(container_id)), _port_list)


def _egress(response: httpx.Response, client: Any) -> Egress:
    return Egress.from_dict(_json(response))


def get_egress(container_id: Any) -> Op[Egress]:
    return Op("GET", "/containers/{}/egress".format(_seg(container_id)), _egress)


def port_url(base: str, container_id: Any, port: int, path: str, api_key: Optional[str]) -> str:
    """The URL of ``path`` on the server at ``port`` inside a sandbox; with
    ``api_key``, ``?access_token=`` for a browser (the server trades it for a cookie of
    that port's path at once, and never forwards it)."""
    if not 1 <= int(port) <= 65535:
        raise ValueError("port must be between 1 and 65535, not {!r}".format(port))
    url = "{}{}/containers/{}/ports/{}/{}".format(
        base.rstrip("/"), API_PREFIX, _seg(container_id), int(port), path.lstrip("/")
    )
    if api_key:
        url += ("&" if "?" in url else "?") + "access_token=" + quote(api_key, safe="")
    return url


# processes


def _procs(container_id: Any) -> str:
    return "/containers/{}/processes".format(_seg(container_id))


def start_process(
    container_id: Any,
    command: str,
    timeout_secs: Optional[int] = None,
    working_directory: Optional[str] = None,
    environment_vars: Optional[Mapping[str, str]] = None,
    stdin_open: bool = False,
    tty: bool = False,
) -> Op[Process]:
    body = _drop_none(
        {
            "command": command,
            "timeout_secs": timeout_secs,
            "working_directory": working_directory,
            "environment": dict(environment_vars) if environment_vars is not None else None,
        }
    )
    body["stdin_open"] = bool(stdin_open)
    body["tty"] = bool(tty)
    return Op("POST", _procs(container_id), _model(Process), json=body)


def list_processes(container_id: Any) -> Op[List[Process]]:
    return Op("GET", _procs(container_id), _models(Process, "processes"))


def get_process(container_id: Any, process_id: Any) -> Op[Process]:
    return Op("GET", "{}/{}".format(_procs(container_id), _seg(process_id)), _model(Process))


def process_output(
    container_id: Any,
    process_id: Any,
    stdout_offset: Optional[int] = None,
    stderr_offset: Optional[int] = None,
) -> Op[ProcessOutput]:
    return Op(
        "GET",
        "{}/{}/output".format(_procs(container_id), _seg(process_id)),
        _model(ProcessOutput),
        params={"stdout_offset": stdout_offset, "stderr_offset": stderr_offset},
    )


def process_stream(
    container_id: Any,
    process_id: Any,
    stdout_offset: Optional[int] = None,
    stderr_offset: Optional[int] = None,
) -> Op[None]:
    return Op(
        "GET",
        "{}/{}/stream".format(_procs(container_id), _seg(process_id)),
        _none,
        params={"stdout_offset": stdout_offset, "stderr_offset": stderr_offset},
        headers={"Accept": "text/event-stream"},
        min_read=UNBOUNDED,
        event=exec_event,
    )


def process_stdin(
    container_id: Any, process_id: Any, data: Union[str, bytes, None] = None, eof: bool = False
) -> Op[None]:
    body: Dict[str, Any] = {"eof": bool(eof)}
    if isinstance(data, (bytes, bytearray)):
        body["data_base64"] = base64.b64encode(bytes(data)).decode("ascii")
    elif data is not None:
        body["data"] = data
    return Op("POST", "{}/{}/stdin".format(_procs(container_id), _seg(process_id)), _none, json=body)


def signal_process(container_id: Any, process_id: Any, signal: Union[str, int]) -> Op[None]:
    return Op(
        "POST",
        "{}/{}/signal".format(_procs(container_id), _seg(process_id)),
        _none,
        json={"signal": signal},
    )


def remove_process(container_id: Any, process_id: Any) -> Op[None]:
    return Op("DELETE", "{}/{}".format(_procs(container_id), _seg(process_id)), _none)


# jobs


def _repo_entry(repo: Any) -> Dict[str, Any]:
    if isinstance(repo, str):
        return {"repo_url": repo}
    if isinstance(repo, JobRepo):
        return repo.to_dict()
    if isinstance(repo, Mapping):
        return _drop_none(dict(repo))
    raise TypeError("a job repo is a URL, a JobRepo or a dict, got {!r}".format(repo))


def create_job(
    command: str,
    repos: Iterable[Any],
    concurrency: Optional[int] = None,
    timeout_secs: Optional[int] = None,
    environment_vars: Optional[Mapping[str, str]] = None,
    image: Optional[str] = None,
    resources: Optional[Resources] = None,
    network: Optional[Union[str, Mapping[str, Any]]] = None,
    initial_command: Optional[str] = None,
    image_id: Optional[str] = None,
) -> Op[Job]:
    if isinstance(repos, (str, bytes)):
        raise TypeError("repos is a list (of URLs, JobRepo or dicts), not one string")
    body = _drop_none(
        {
            "command": command,
            "repos": [_repo_entry(repo) for repo in repos],
            "concurrency": concurrency,
            "timeout_secs": timeout_secs,
            "environment_vars": dict(environment_vars) if environment_vars is not None else None,
            "image": image,
            "resources": dict(resources) if resources is not None else None,
            "network": network,
            "initial_command": initial_command,
            "image_id": image_id,
        }
    )
    return Op("POST", "/jobs", _model(Job), json=body)


def list_jobs() -> Op[List[Job]]:
    return Op("GET", "/jobs", _models(Job, "jobs"))


def get_job(job_id: Any) -> Op[Job]:
    return Op("GET", "/jobs/" + _seg(job_id), _model(Job))


def job_results(job_id: Any) -> Op[List[JobResult]]:
    return Op("GET", "/jobs/{}/results".format(_seg(job_id)), _models(JobResult, "results"))


def job_events(job_id: Any, read_timeout: Optional[float] = None) -> Op[None]:
    return Op(
        "GET",
        "/jobs/{}/events".format(_seg(job_id)),
        _none,
        headers={"Accept": "text/event-stream"},
        min_read=UNBOUNDED if read_timeout is None else read_timeout,
        event=job_event,
    )


def cancel_job(job_id: Any) -> Op[Job]:
    return Op("POST", "/jobs/{}/cancel".format(_seg(job_id)), _model(Job))


def build_image(
    repo_url: str,
    recipe: str = "dockerfile",
    branch: Optional[str] = None,
    commit: Optional[str] = None,
    dockerfile: Optional[str] = None,
    build_args: Optional[Mapping[str, str]] = None,
) -> Op[Image]:
    body = _drop_none(
        {
            "repo_url": repo_url,
            "from": recipe,
            "branch": branch,
            "commit": commit,
            "dockerfile": dockerfile,
            "build_args": dict(build_args) if build_args is not None else None,
        }
    )
    return Op("POST", "/images", _model(Image), json=body, min_read=CREATE_MIN_READ_SECS)


def list_images() -> Op[List[Image]]:
    return Op("GET", "/images", _models(Image, "images"))


def get_image(image_id: Any) -> Op[Image]:
    return Op("GET", "/images/" + _seg(image_id), _model(Image))


def delete_image(image_id: Any) -> Op[None]:
    return Op("DELETE", "/images/" + _seg(image_id), _none)


def image_logs(image_id: Any, read_timeout: Optional[float] = None) -> Op[None]:
    return Op(
        "GET",
        "/images/{}/logs".format(_seg(image_id)),
        _none,
        headers={"Accept": "text/event-stream"},
        min_read=UNBOUNDED if read_timeout is None else read_timeout,
        event=image_event,
    )


def delete_job(job_id: Any) -> Op[None]:
    return Op("DELETE", "/jobs/" + _seg(job_id), _none)

