"""Typed views of the server's JSON answers (see the API's reference).

Every model is a dataclass built with ``from_dict``, which ignores fields it does not
know (the server may add some) and keeps the whole decoded object in ``raw``.
Timestamps are timezone-aware :class:`datetime.datetime` values in UTC.
"""

import re
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, ClassVar, Dict, List, Optional, Type, TypeVar, Union

__all__ = [
    "parse_time",
    "ExecResult",
    "ContainerInfo",
    "FileSystemItem",
    "Process",
    "ProcessOutput",
    "Port",
    "Snapshot",
    "Health",
    "Info",
    "ErrorInfo",
    "JobCounts",
    "Job",
    "JobRepo",
    "JobResult",
    "StdoutEvent",
    "StderrEvent",
    "ExitEvent",
    "ErrorEvent",
    "JobResultEvent",
    "JobDoneEvent",
    "UnknownEvent",
    "ExecEvent",
    "JobEvent",
]

_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(Z|z|[+-]\d{2}:?\d{2})?$"
)


def parse_time(value: Any) -> Optional[datetime]:
    """RFC 3339 text (any number of fractional digits, ``Z`` or an offset) to datetime."""
    if value is None or isinstance(value, datetime):
        return value
    match = _TIME.match(str(value).strip())
    if match is None:
        raise ValueError("not an RFC 3339 timestamp: {!r}".format(value))
    year, month, day, hour, minute, second, frac, zone = match.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    tz = timezone.utc
    if zone and zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    return datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tz
    ).astimezone(timezone.utc)


M = TypeVar("M", bound="_Model")


@dataclass
class _Model:
    """Shared ``from_dict``: known fields by name, converted by ``_convert``."""

    _convert: ClassVar[Dict[str, Callable[[Any], Any]]] = {}

    @classmethod
    def from_dict(cls: Type[M], data: Dict[str, Any]) -> M:
        if not isinstance(data, dict):
            raise TypeError("expected a JSON object for {}, got {!r}".format(cls.__name__, data))
        kwargs: Dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "raw" or not f.init or f.name not in data:
                continue
            value = data[f.name]
            convert = cls._convert.get(f.name)
            if convert is not None and value is not None:
                value = convert(value)
            kwargs[f.name] = value
        obj = cls(**kwargs)
        setattr(obj, "raw", data)
        return obj

    def _assign(self, other: "_Model") -> None:
        """Takes every field of ``other`` (same class or a base): used by ``refresh``."""
        for f in fields(other):
            setattr(self, f.name, getattr(other, f.name))


_time = parse_time


@dataclass
class ExecResult(_Model):
    """The result of a command run to completion (``execute``)."""

    command: str = ""
    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""
    execution_time_secs: float = 0.0
    timestamp: Optional[datetime] = None
    timed_out: bool = False
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    _convert: ClassVar[Dict[str, Callable[[Any], Any]]] = {"timestamp": _time}

    @property
    def ok(self) -> bool:
        """Exit code 0 and not timed out."""
        return self.exit_code == 0 and not self.timed_out

    @property
    def execution_time(self) -> float:
        """Alias of ``execution_time_secs``."""
        return self.execution_time_secs


@dataclass
class ContainerInfo(_Model):
    """A sandbox as the server describes it (the *ContainerResponse*)."""

    container_id: str = ""
    status: str = ""
    repo_url: str = ""
    branch: Optional[str] = None
    commit: Optional[str] = None
    created_at: Optional[datetime] = None
    expires_at: Optional[datetime] = None
    working_directory: str = "/workspace"
    resolved_commit: str = ""
    image: str = ""
    initial_command_result: Optional[ExecResult] = None
    status_reason: Optional[str] = None
    job_id: Optional[str] = None
    image_id: Optional[str] = None
    depth: Optional[int] = None
    #: ``"none"``, ``"bridge"``, or ``{"allow": [...]}`` (the egress allow-list).
    network: Optional[Any] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    _convert: ClassVar[Dict[str, Callable[[Any], Any]]] = {
        "created_at": _time,
        "expires_at": _time,
        "initial_command_result": ExecResult.from_dict,
    }

    @property
    def id(self) -> str:
        """Alias of ``container_id``."""
        return self.container_id


@dataclass
class FileSystemItem(_Model):
    """One directory entry (``browse``) or the file just written (``write_file``)."""

    name: str = ""
    type: str = ""
    size: Optional[int] = None
    modified_at: Optional[datetime] = None
    permissions: str = ""
    symlink_target: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    _convert: ClassVar[Dict[str, Callable[[Any], Any]]] = {"modified_at": _time}

    @property
    def is_dir(self) -> bool:
        return self.type == "directory"

    @property
    def is_file(self) -> bool:
        return self.type == "file"

    @property
    def is_symlink(self) -> bool:
        return self.type == "symlink"


@dataclass
class Process(_Model):
    """A long-running process of a sandbox."""

    process_id: str = ""
    command: str = ""
    status: str = ""
    exit_code: Optional[int] = None
    pid: Optional[int] = None
    started_at: Optional[datetime] = None
    ended_at: Optional[datetime] = None
    working_directory: str = ""
    tty: bool = False
    stdin_open: bool = False
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    _convert: ClassVar[Dict[str, Callable[[Any], Any]]] = {
        "started_at": _time,
        "ended_at": _time,
    }

    @property
    def running(self) -> bool:
        return self.status == "running"


@dataclass
class Port(_Model):
    """A TCP port listening inside a sandbox, with a process that holds it."""

    port: int = 0
    process: Optional[str] = None
    pid: Optional[int] = None
    addresses: List[str] = field(default_factory=list)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class EgressDecision(_Model):
    """One decision of a sandbox's egress proxy."""

    time: str = ""
    host: str = ""
    port: int = 0
    allowed: bool = False
    reason: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class Egress(_Model):
    """A sandbox's allow-list (``None``: it has no proxy) and its proxy's last
    decisions, oldest first."""

    allow: Optional[List[str]] = None
    decisions: List[EgressDecision] = field(default_factory=list)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    _convert: ClassVar[Dict[str, Callable[[Any], Any]]] = {
        "decisions": lambda items: [EgressDecision.from_dict(d) for d in items],
    }


@dataclass
class ProcessOutput(_Model):
    """Output of a process between offsets; pass ``*_end`` back to get what is new."""

    stdout: str = ""
    stderr: str = ""
    stdout_offset: int = 0
    stderr_offset: int = 0
    stdout_end: int = 0
    stderr_end: int = 0
    status: str = ""
    exit_code: Optional[int] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class Snapshot(_Model):
    """A sandbox's filesystem at one moment, to start new sandboxes from."""

    snapshot_id: str = ""
    name: str = ""
    source_container_id: str = ""
    repo_url: str = ""
    branch: Optional[str] = None
    resolved_commit: str = ""
    image: str = ""
    size_bytes: int = 0
    created_at: Optional[datetime] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    _convert: ClassVar[Dict[str, Callable[[Any], Any]]] = {"created_at": _time}

    @property
    def id(self) -> str:
        return self.snapshot_id


@dataclass
class Health(_Model):
    """``GET /health``."""

    status: str = ""
    version: str = ""
    uptime_seconds: float = 0.0
    active_containers: int = 0
    docker_available: bool = False
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class Info(_Model):
    """``GET /info``: the main fields; everything else is in ``raw``."""

    name: str = ""
    version: str = ""
    instance: str = ""
    docker_base_image: str = ""
    allowed_git_hosts: List[str] = field(default_factory=list)
    auth_required: bool = False
    capabilities: List[str] = field(default_factory=list)
    limits: Dict[str, Any] = field(default_factory=dict)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class ErrorInfo(_Model):
    """An error body carried inside an answer (a job result, an SSE ``error`` event)."""

    error: Optional[str] = None
    detail: Optional[str] = None
    timestamp: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class JobCounts(_Model):
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    errored: int = 0
    cancelled: int = 0
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class Job(_Model):
    """One command across many repositories."""

    job_id: str = ""
    status: str = ""
    command: str = ""
    created_at: Optional[datetime] = None
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    total: int = 0
    counts: JobCounts = field(default_factory=JobCounts)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    _convert: ClassVar[Dict[str, Callable[[Any], Any]]] = {
        "created_at": _time,
        "started_at": _time,
        "finished_at": _time,
        "counts": JobCounts.from_dict,
    }

    @property
    def id(self) -> str:
        return self.job_id

    @property
    def finished(self) -> bool:
        """No longer queued or running (``completed``, ``cancelled``, ...)."""
        return self.status not in ("queued", "running", "")


@dataclass
class JobRepo:
    """One entry of a job's ``repos`` (a plain URL string works too)."""

    repo_url: str
    branch: Optional[str] = None
    commit: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"repo_url": self.repo_url}
        if self.branch is not None:
            out["branch"] = self.branch
        if self.commit is not None:
            out["commit"] = self.commit
        return out


@dataclass
class JobResult(_Model):
    """The outcome for one repository of a job."""

    index: int = 0
    repo_url: str = ""
    branch: Optional[str] = None
    commit: Optional[str] = None
    resolved_commit: Optional[str] = None
    status: str = ""
    exit_code: Optional[int] = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    timed_out: bool = False
    execution_time_secs: Optional[float] = None
    error: Optional[ErrorInfo] = None
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    _convert: ClassVar[Dict[str, Callable[[Any], Any]]] = {
        "error": ErrorInfo.from_dict,
        "started_at": _time,
        "finished_at": _time,
    }


# --- Server-Sent Events -------------------------------------------------------------


@dataclass
class StdoutEvent(_Model):
    """Output on stdout. ``offset`` (process streams only) is where ``data`` begins."""

    data: str = ""
    offset: Optional[int] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class StderrEvent(_Model):
    """Output on stderr. ``offset`` (process streams only) is where ``data`` begins."""

    data: str = ""
    offset: Optional[int] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class ExitEvent(_Model):
    """The last event of a stream: the result without the output.

    ``process_id`` and ``status`` are set on process streams only.
    """

    command: str = ""
    exit_code: Optional[int] = None
    execution_time_secs: Optional[float] = None
    timestamp: Optional[datetime] = None
    timed_out: bool = False
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    process_id: Optional[str] = None
    status: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    _convert: ClassVar[Dict[str, Callable[[Any], Any]]] = {"timestamp": _time}


@dataclass
class ErrorEvent(_Model):
    """The server could not go on with the stream (an ``error`` event)."""

    error: Optional[str] = None
    detail: Optional[str] = None
    timestamp: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class JobResultEvent:
    """An entry of a job finished."""

    result: JobResult


@dataclass
class JobDoneEvent:
    """The job ended; the last event of ``jobs.events``."""

    job: Job


@dataclass
class Image(_Model):
    """An image built from a repository's Dockerfile or devcontainer (``POST /images``)."""

    image_id: str = ""
    status: str = ""
    repo_url: str = ""
    branch: Optional[str] = None
    resolved_commit: str = ""
    #: ``dockerfile`` or ``devcontainer`` (the API's ``from``).
    recipe: str = ""
    image: str = ""
    size_bytes: int = 0
    created_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    error: Optional[str] = None
    dockerfile: Optional[str] = None
    container_env: Dict[str, str] = field(default_factory=dict)
    post_create_command: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    _convert: ClassVar[Dict[str, Callable[[Any], Any]]] = {"created_at": _time, "finished_at": _time}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Image":
        image = super().from_dict(data)
        image.recipe = str(data.get("from") or "")
        return image

    @property
    def id(self) -> str:
        return self.image_id

    @property
    def finished(self) -> bool:
        return self.status in ("ready", "failed")


@dataclass
class ImageLogEvent:
    """Output of a build."""

    text: str


@dataclass
class ImageDoneEvent:
    """The build ended; the last event of ``images.logs``."""

    image: Image


@dataclass
class UnknownEvent:
    """An event this version of the client does not know (kept, not dropped)."""

    event: str
    data: Any


ExecEvent = Union[StdoutEvent, StderrEvent, ExitEvent, ErrorEvent, UnknownEvent]
JobEvent = Union[JobResultEvent, JobDoneEvent, ErrorEvent, UnknownEvent]
