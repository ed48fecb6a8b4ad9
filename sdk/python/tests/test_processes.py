"""Processes: start, list, get, output, stream, stdin, kill, remove."""

import time

import pytest

import repobox
from repobox import ExitEvent, Process, ProcessOutput, Sandbox, StdoutEvent


def _output_until(box: Sandbox, pid: str, needle: str, timeout: float = 15.0) -> ProcessOutput:
    deadline = time.monotonic() + timeout
    while True:
        out = box.processes.output(pid)
        if needle in out.stdout or time.monotonic() > deadline:
            return out
        time.sleep(0.2)


def test_start_get_list_output_kill(box: Sandbox) -> None:
    proc = box.processes.start("echo ready; echo warm >&2; sleep 300")
    assert isinstance(proc, Process)
    assert proc.process_id
    assert proc.status == "running" and proc.running
    assert proc.exit_code is None
    assert proc.command == "echo ready; echo warm >&2; sleep 300"
    assert proc.working_directory == "/workspace"
    assert proc.started_at is not None

    out = _output_until(box, proc.process_id, "ready")
    assert out.stdout == "ready\n"
    assert out.stdout_offset == 0
    assert out.stdout_end == len("ready\n")
    assert out.status == "running"
    later = box.processes.output(proc.process_id, stdout_offset=out.stdout_end, stderr_offset=out.stderr_end)
    assert later.stdout == ""
    assert later.stdout_offset == out.stdout_end

    assert box.processes.get(proc.process_id).status == "running"
    assert proc.process_id in [p.process_id for p in box.processes.list()]

    box.processes.kill(proc.process_id)
    ended = box.processes.wait(proc.process_id, timeout=15)
    assert ended.status == "killed"
    assert ended.exit_code == 143
    assert ended.ended_at is not None


def test_kill_with_signal_name_and_number(box: Sandbox) -> None:
    one = box.processes.start("sleep 300")
    # SIGINT can be caught: wait until the shell runs the command (bash may swallow a
    # SIGINT that arrives while it is still starting).
    two = box.processes.start("echo up; sleep 300")
    assert _output_until(box, two.process_id, "up").stdout == "up\n"
    box.processes.kill(one, signal="KILL")
    box.processes.kill(two.process_id, signal=2)
    assert box.processes.wait(one, timeout=15).exit_code == 128 + 9
    assert box.processes.wait(two, timeout=15).exit_code == 128 + 2
    with pytest.raises(repobox.BadRequest):
        box.processes.kill(box.processes.start("sleep 300"), signal="SIGNOPE")


def test_exit_code_and_stream(box: Sandbox) -> None:
    proc = box.processes.start("for i in 1 2 3; do echo n$i; sleep 0.2; done; exit 5")
    events = list(box.processes.stream(proc))
    assert isinstance(events[-1], ExitEvent)
    assert events[-1].exit_code == 5
    assert events[-1].process_id == proc.process_id
    text = "".join(ev.data for ev in events if isinstance(ev, StdoutEvent))
    assert text == "n1\nn2\nn3\n"
    offsets = [ev.offset for ev in events if isinstance(ev, StdoutEvent)]
    assert offsets[0] == 0
    done = box.processes.get(proc)
    assert done.status == "exited" and done.exit_code == 5
    # Replay from an offset.
    replay = [ev for ev in box.processes.stream(proc, stdout_offset=3) if isinstance(ev, StdoutEvent)]
    assert "".join(ev.data for ev in replay) == "n2\nn3\n"


def test_stdin(box: Sandbox) -> None:
    proc = box.processes.start("tr a-z A-Z", stdin_open=True)
    assert proc.stdin_open is True
    box.processes.stdin(proc.process_id, "hello ")
    box.processes.stdin(proc.process_id, b"bytes\n", eof=True)
    ended = box.processes.wait(proc, timeout=15)
    assert ended.status == "exited" and ended.exit_code == 0
    assert box.processes.output(proc).stdout == "HELLO BYTES\n"
    with pytest.raises(repobox.Conflict):
        box.processes.stdin(proc, "late")


def test_timeout_and_remove(box: Sandbox) -> None:
    proc = box.processes.start("sleep 300", timeout_secs=1)
    ended = box.processes.wait(proc, timeout=20)
    assert ended.status == "timed_out" and ended.exit_code == 124

    running = box.processes.start("sleep 300", environment_vars={"K": "v"}, working_directory="/tmp")
    assert running.working_directory == "/tmp"
    box.processes.remove(running)
    with pytest.raises(repobox.NotFound):
        box.processes.get(running)
    deadline = time.monotonic() + 10
    while box.exec("pgrep -f '^sleep 300$' || true").stdout.strip():
        assert time.monotonic() < deadline, "a removed process still runs"
        time.sleep(0.2)


def test_unknown_process(box: Sandbox) -> None:
    with pytest.raises(repobox.NotFound):
        box.processes.get("proc-999999")
