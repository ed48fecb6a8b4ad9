"""repobox: a Python client for repobox sandboxes.

    from repobox import Client

    with Client() as client, client.create("https://github.com/psf/requests") as box:
        print(box.exec("git log --oneline -1").stdout)
"""

__version__ = "0.1.0"

from ._core import ForkResult
from .async_client import AsyncClient, AsyncJobs, AsyncProcesses, AsyncSandbox, AsyncSnapshots
from .client import Client, Jobs, Processes, Sandbox, Snapshots
from .errors import (
    APIError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RepoboxError,
    ServerError,
    ServiceUnavailable,
    TooManyRequests,
    TransportError,
    Unauthorized,
    UnsupportedMediaType,
    Unprocessable,
)
from .models import (
    ContainerInfo,
    ErrorEvent,
    ErrorInfo,
    ExecEvent,
    ExecResult,
    ExitEvent,
    FileSystemItem,
    Health,
    Info,
    Job,
    JobCounts,
    JobDoneEvent,
    JobEvent,
    JobRepo,
    JobResult,
    JobResultEvent,
    Process,
    ProcessOutput,
    Snapshot,
    StderrEvent,
    StdoutEvent,
    UnknownEvent,
)

__all__ = [
    "__version__",
    "Client",
    "AsyncClient",
    "Sandbox",
    "AsyncSandbox",
    "Processes",
    "AsyncProcesses",
    "Snapshots",
    "AsyncSnapshots",
    "Jobs",
    "AsyncJobs",
    "ForkResult",
    "RepoboxError",
    "TransportError",
    "APIError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "Unprocessable",
    "TooManyRequests",
    "ServerError",
    "ServiceUnavailable",
    "ContainerInfo",
    "ExecResult",
    "FileSystemItem",
    "Process",
    "ProcessOutput",
    "Snapshot",
    "Health",
    "Info",
    "ErrorInfo",
    "Job",
    "JobCounts",
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
