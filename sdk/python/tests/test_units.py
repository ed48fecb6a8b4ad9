"""Pure logic that needs no server: SSE framing, timestamps, error mapping, models."""

from datetime import datetime, timezone

import pytest

import repobox
from repobox import _core as core
from repobox.errors import error_for_status
from repobox.models import ContainerInfo, ExecResult, parse_time


def test_sse_decoder() -> None:
    decoder = core.SSEDecoder()
    lines = [
        ": keep-alive",
        "event: stdout",
        'data: {"data": "a"}',
        "",
        "",
        "event:exit",
        "data: line1",
        "data: line2",
        "",
        'data: {"x": 1}',
    ]
    events = [ev for ev in (decoder.feed(line) for line in lines) if ev is not None]
    assert events == [("stdout", '{"data": "a"}'), ("exit", "line1\nline2")]
    assert decoder.finish() == ("message", '{"x": 1}')
    assert decoder.finish() is None


def test_exec_event_mapping() -> None:
    assert core.exec_event("stdout", '{"data": "x", "offset": 3}') == repobox.StdoutEvent(data="x", offset=3)
    assert isinstance(core.exec_event("stderr", '{"data": "y"}'), repobox.StderrEvent)
    exit_event = core.exec_event("exit", '{"exit_code": 0, "timed_out": false, "new_field": 1}')
    assert isinstance(exit_event, repobox.ExitEvent) and exit_event.raw["new_field"] == 1
    assert core.exec_event("error", '{"error": "e", "detail": "d"}').detail == "d"
    assert core.exec_event("error", "not json").detail == "not json"
    unknown = core.exec_event("progress", "[1]")
    assert isinstance(unknown, repobox.UnknownEvent) and unknown.data == [1]


def test_parse_time() -> None:
    assert parse_time("2023-12-21T10:30:56.123456789Z") == datetime(2023, 12, 21, 10, 30, 56, 123456, timezone.utc)
    assert parse_time("2023-12-21T10:30:56Z") == datetime(2023, 12, 21, 10, 30, 56, tzinfo=timezone.utc)
    assert parse_time("2023-12-21T12:30:56.5+02:00") == datetime(2023, 12, 21, 10, 30, 56, 500000, timezone.utc)
    assert parse_time(None) is None
    with pytest.raises(ValueError):
        parse_time("yesterday")


@pytest.mark.parametrize(
    "status,cls",
    [
        (400, repobox.BadRequest),
        (401, repobox.Unauthorized),
        (403, repobox.Forbidden),
        (404, repobox.NotFound),
        (409, repobox.Conflict),
        (413, repobox.PayloadTooLarge),
        (415, repobox.UnsupportedMediaType),
        (422, repobox.Unprocessable),
        (429, repobox.TooManyRequests),
        (503, repobox.ServiceUnavailable),
        (500, repobox.ServerError),
        (418, repobox.APIError),
    ],
)
def test_error_mapping(status: int, cls: type) -> None:
    exc = error_for_status(status, {"error": "E", "detail": "D", "timestamp": "T"})
    assert type(exc) is cls
    assert isinstance(exc, repobox.RepoboxError)
    assert (exc.status, exc.error, exc.detail, exc.timestamp) == (status, "E", "D", "T")
    assert "D" in str(exc)


def test_error_mapping_non_json() -> None:
    exc = error_for_status(502, None, "<html>bad gateway</html>")
    assert isinstance(exc, repobox.ServerError)
    assert exc.error is None and exc.detail == "<html>bad gateway</html>"


def test_models_ignore_unknown_fields() -> None:
    info = ContainerInfo.from_dict(
        {
            "container_id": "c",
            "status": "running",
            "repo_url": "u",
            "created_at": "2023-12-21T10:30:56Z",
            "initial_command_result": {"command": "x", "exit_code": 1, "stdout": "", "stderr": ""},
            "brand_new": True,
        }
    )
    assert info.id == "c"
    assert isinstance(info.initial_command_result, ExecResult)
    assert info.raw["brand_new"] is True


def test_request_building() -> None:
    op = core.create_container("http://h/r.git", branch="b", snapshot_id=None, environment_vars={"A": "1"})
    assert op.method == "POST" and op.path == "/api/v1/containers"
    assert op.json == {"repo_url": "http://h/r.git", "branch": "b", "environment_vars": {"A": "1"}}
    exec_op = core.execute("id/with slash", "ls", timeout_secs=100, environment_vars={"E": "v"})
    assert exec_op.path == "/api/v1/containers/id%2Fwith%20slash/execute"
    assert exec_op.json == {"command": "ls", "timeout_secs": 100, "environment": {"E": "v"}}
    timeout = exec_op.request_kwargs(60.0)["timeout"]
    assert timeout.read == 130.0 and timeout.connect == 60.0
    assert core.process_stdin("c", "p", b"\x00\xff", eof=True).json == {"eof": True, "data_base64": "AP8="}
    assert core.create_job("c", ["u", repobox.JobRepo("v", branch="b")]).json["repos"] == [
        {"repo_url": "u"},
        {"repo_url": "v", "branch": "b"},
    ]
    with pytest.raises(TypeError):
        core.create_job("c", "just-one-url")
