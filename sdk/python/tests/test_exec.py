"""Commands: exec and stream."""

import time

import pytest

import repobox
from repobox import ExecResult, ExitEvent, Sandbox, StderrEvent, StdoutEvent


def test_exec_exit_code_and_streams(box: Sandbox) -> None:
    result = box.exec("echo out; echo err >&2; exit 7")
    assert isinstance(result, ExecResult)
    assert result.command == "echo out; echo err >&2; exit 7"
    assert result.exit_code == 7
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert result.timed_out is False
    assert result.stdout_truncated is False and result.stderr_truncated is False
    assert result.execution_time_secs >= 0
    assert result.execution_time == result.execution_time_secs
    assert result.timestamp is not None
    assert not result.ok
    assert box.exec("true").ok


def test_exec_stdin(box: Sandbox) -> None:
    assert box.exec("tr a-z A-Z", stdin="hello\nworld\n").stdout == "HELLO\nWORLD\n"
    assert box.exec("wc -c", stdin="é".encode()).stdout.strip() == "2"
    # No stdin: end-of-file at once, no hang.
    assert box.exec("cat; echo done", timeout_secs=10).stdout == "done\n"


def test_exec_working_directory_and_environment(box: Sandbox) -> None:
    assert box.exec("pwd").stdout == "/workspace\n"
    assert box.exec("pwd", working_directory="/workspace/src").stdout == "/workspace/src\n"
    result = box.exec("echo $A-$B", environment_vars={"A": "one", "B": "two"})
    assert result.stdout == "one-two\n"


def test_exec_timeout(box: Sandbox) -> None:
    started = time.monotonic()
    result = box.exec("echo before; sleep 30; echo after", timeout_secs=2)
    assert time.monotonic() - started < 20
    assert result.timed_out is True
    assert result.exit_code == 124
    assert "before" in result.stdout
    assert "after" not in result.stdout


def test_exec_invalid_timeout_is_bad_request(box: Sandbox) -> None:
    with pytest.raises(repobox.BadRequest) as err:
        box.exec("true", timeout_secs=0)
    assert "timeout_secs" in (err.value.detail or "")


def test_exec_on_destroyed_sandbox(client: repobox.Client, repo_url: str) -> None:
    box = client.create(repo_url)
    box.destroy()
    with pytest.raises(repobox.NotFound):
        box.exec("true")


def test_stream_events(box: Sandbox) -> None:
    events = list(box.stream("for i in 1 2 3; do echo line$i; sleep 0.1; done; echo warn >&2; exit 3"))
    assert isinstance(events[-1], ExitEvent)
    assert all(isinstance(ev, (StdoutEvent, StderrEvent)) for ev in events[:-1])
    stdout = "".join(ev.data for ev in events if isinstance(ev, StdoutEvent))
    stderr = "".join(ev.data for ev in events if isinstance(ev, StderrEvent))
    assert stdout == "line1\nline2\nline3\n"
    assert stderr == "warn\n"
    exit_event = events[-1]
    assert exit_event.exit_code == 3
    assert exit_event.timed_out is False
    assert exit_event.command.startswith("for i in")
    assert exit_event.execution_time_secs is not None and exit_event.execution_time_secs >= 0.2


def test_stream_arrives_live(box: Sandbox) -> None:
    started = time.monotonic()
    first_at = None
    for event in box.stream("echo first; sleep 3; echo second"):
        if isinstance(event, StdoutEvent) and first_at is None:
            first_at = time.monotonic() - started
    total = time.monotonic() - started
    assert first_at is not None
    assert first_at < total - 2, "the first line came only with the end ({:.1f}s of {:.1f}s)".format(first_at, total)


def test_stream_stdin_environment_timeout(box: Sandbox) -> None:
    events = list(box.stream("cat; echo $X; sleep 30", stdin="in\n", environment_vars={"X": "ex"}, timeout_secs=2))
    out = "".join(ev.data for ev in events if isinstance(ev, StdoutEvent))
    assert out == "in\nex\n"
    assert isinstance(events[-1], ExitEvent)
    assert events[-1].timed_out is True
    assert events[-1].exit_code == 124


def test_stream_break_kills_command(box: Sandbox) -> None:
    stream = box.stream("echo started; sleep 60; touch /tmp/should-not-exist")
    for event in stream:
        assert isinstance(event, StdoutEvent)
        break
    stream.close()
    # The command dies with the connection: no `sleep 60` left running.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if box.exec("pgrep -f '^sleep 60$' || true").stdout.strip() == "":
            break
        time.sleep(0.3)
    else:
        pytest.fail("the streamed command still runs after the client went away")


def test_stream_error_status_raises(box: Sandbox) -> None:
    with pytest.raises(repobox.BadRequest):
        list(box.stream("true", working_directory="relative"))
